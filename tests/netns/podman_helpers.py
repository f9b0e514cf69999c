"""Podman (Debian's 4.3) for tests, with a private configuration: CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF point at files under a temporary directory, with storage, run
and temporary roots there too, so the machine's own Podman setup is never touched.

The settings this machine needs: ``default_ulimits = []`` (the sandbox refuses the rlimits
Podman sets by default), ``runtime = "runc"`` (crun refuses the cgroup layout here),
``network_backend = "cni"`` with our network configuration dir and plugin dir. No image
can be pulled: the image is ``podman import`` of a tarball holding Debian's busybox-static.
Podman runs inside a lab host with ``nsenter --net=/run/netns/NAME`` (``ip netns exec``
would remount /sys and hide the cgroup mounts runc needs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

IMAGE = "localhost/weave-fdp-test-busybox:latest"
APPLETS = ("sh", "ping", "ip", "sleep", "cat", "nslookup", "hostname", "wget", "ifconfig")
# Directories Podman and libcni create outside its configured roots on first use (the image
# blob cache, CNI result cache); removed afterwards when they were not there before.
STRAY_DIRS = ("/var/lib/containers", "/var/lib/cni")


def missing_tools() -> str | None:
    for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install {pkg}; scripts/install.sh does)"
    if not Path("/bin/busybox").exists() or not _static(Path("/bin/busybox")):
        return "a static busybox is missing (apt-get install busybox-static; scripts/install.sh does)"
    return None


def _static(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP (no dynamic loader): statically linked."""
    data = path.read_bytes()[:4096]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], "little") == 3:   # PT_INTERP
            return False
    return True


class Podman:
    def __init__(self, root: Path, plugin_python_path: str) -> None:
        self.root = root
        self.stray_before = {d: os.path.exists(d) for d in STRAY_DIRS}
        for d in ("cni.d", "plugins", "run", "storage", "tmp", "img/bin"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(f"""\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{root}/tmp"
static_dir = "{root}/storage/libpod"
volume_path = "{root}/storage/volumes"
[network]
network_backend = "cni"
network_config_dir = "{root}/cni.d"
cni_plugin_dirs = ["{root}/plugins", "/usr/lib/cni", "/opt/cni/bin"]
""")
        (root / "storage.conf").write_text(f"""\
[storage]
driver = "vfs"
runroot = "{root}/run"
graphroot = "{root}/storage"
""")
        # the plugin as a runtime finds it: an executable named weave-fdp-cni in a plugin dir
        plugin = root / "plugins" / "weave-fdp-cni"
        plugin.write_text(f"#!/bin/sh\nexec env PYTHONPATH={plugin_python_path} {sys.executable} "
                          f"-m weave_fdp.cni.plugin \"$@\"\n")
        plugin.chmod(0o755)
        (root / "cni.d" / "weave.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": "weave", "plugins": [{"type": "weave-fdp-cni"}]}))
        self.env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf")}

    def run(self, *args: str, netns: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["podman", *args]
        if netns is not None:
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        cp = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()[-500:]}")
        return cp

    def build_image(self) -> None:
        img = self.root / "img"
        shutil.copy2("/bin/busybox", img / "bin" / "busybox")
        for a in APPLETS:
            link = img / "bin" / a
            if not link.exists():
                link.symlink_to("busybox")
        tar = self.root / "busybox.tar"
        with tarfile.open(tar, "w") as t:
            t.add(img, arcname=".")
        self.run("import", str(tar), IMAGE)

    def usable(self) -> str | None:
        """None when a container runs here; else why not (Podman's last line)."""
        cp = self.run("run", "--rm", "--network", "none", IMAGE, "/bin/sh", "-c", "echo ok", check=False)
        if cp.returncode != 0 or "ok" not in cp.stdout:
            return f"podman cannot run a container here: {(cp.stderr.strip().splitlines() or ['?'])[-1]}"
        return None

    def ip_of(self, name: str) -> str:
        out = self.run("inspect", "-f", "{{json .NetworkSettings.Networks}}", name).stdout
        nets = json.loads(out)
        return nets["weave"]["IPAddress"]

    def full_id(self, name: str) -> str:
        return self.run("inspect", "-f", "{{.Id}}", name).stdout.strip()

    def cleanup(self) -> None:
        self.run("rm", "--all", "--force", "--time", "0", check=False)
        for d, existed in self.stray_before.items():
            if not existed:
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
