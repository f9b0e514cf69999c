"""The systemd unit of the router, and what ``weave-fdp setup`` installs.

The unit runs the router in the foreground (``launch --foreground --resume``), so systemd
sees it exit and restarts it on failure; ``--resume`` makes a restart keep the direct
peers as connect/forget left them (Weave's semantics), while ``WEAVE_PEERS`` in the
environment file only seeds them on the very first start. Usage errors (2), "already
running" (4), missing permission (5) and a missing dependency (8) are not failures a
restart can fix, so they stop the restarts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from weave_fdp.errors import FdpError, UsageError

UNIT_NAME = "weave-fdp.service"
UNIT_DIR = "etc/systemd/system"
ENV_FILE = "etc/default/weave-fdp"
CNI_BIN_DIR = "opt/cni/bin"
CNI_CONF_DIR = "etc/cni/net.d"
CNI_CONF_NAME = "10-weave-fdp.conflist"
RESTART_SEC = 2              # seconds between a failure and the restart
NO_RESTART_CODES = (2, 4, 5, 8)   # ExitCode USAGE, ALREADY_EXISTS, PERMISSION, DEPENDENCY

ENV_TEMPLATE = """\
# Environment of the weave-fdp router (systemd unit weave-fdp.service).
# WEAVE_PEERS seeds the direct peers on the first start; later the list is kept as
# `weave-fdp connect/forget` change it (launch --resume).
WEAVE_PEERS="{peers}"
# WEAVE_PASSWORD=...        encrypt the mesh (same on every host)
# WEAVE_MTU=1376            overlay MTU
# WEAVE_NO_FASTDP=1         sleeve only
# WEAVE_STATUS_ADDR=127.0.0.1:6782   Prometheus /metrics
"""

CNI_CONFLIST = """\
{
  "cniVersion": "1.0.0",
  "name": "weave",
  "plugins": [
    {
      "type": "weave-fdp-cni"
    }
  ]
}
"""


def render_unit(exe: str) -> str:
    """The unit file text for the weave-fdp executable at ``exe``."""
    if not os.path.isabs(exe):
        raise UsageError(f"the weave-fdp executable {exe!r} is not an absolute path")
    return f"""\
[Unit]
Description=weave-fdp router: overlay network for containers (fast datapath in the kernel)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=-/{ENV_FILE}
ExecStart={shlex.quote(exe)} launch --foreground --resume $WEAVE_PEERS
Restart=on-failure
RestartSec={RESTART_SEC}
RestartPreventExitStatus={' '.join(str(c) for c in NO_RESTART_CODES)}
LimitMEMLOCK=infinity
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Installed:
    path: Path
    what: str
    changed: bool


def _write(path: Path, text: str, mode: int, what: str, *, keep: bool = False) -> Installed:
    """Write ``text`` atomically; with ``keep`` an existing file (the admin's) is left alone."""
    if path.exists() and (keep or path.read_text() == text):
        return Installed(path, what, False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return Installed(path, what, True)


def cni_plugin_source() -> str | None:
    """The ``weave-fdp-cni`` console script beside this interpreter (the venv's), or None."""
    exe = Path(sys.executable).parent / "weave-fdp-cni"
    if exe.exists():
        return str(exe)
    return shutil.which("weave-fdp-cni")


def cni_wrapper() -> str:
    """A launcher for the plugin when its console script is not installed: this interpreter
    (and its PYTHONPATH, for a source checkout) running weave_fdp.cni.plugin."""
    pp = os.environ.get("PYTHONPATH")
    env = f"PYTHONPATH={shlex.quote(pp)} " if pp else ""
    return f"#!/bin/sh\nexec env {env}{shlex.quote(sys.executable)} -m weave_fdp.cni.plugin \"$@\"\n"


def install(root: Path, exe: str, peers: list[str], *, cni_conf: bool = False) -> list[Installed]:
    """Install the unit, its environment file (kept if present), the CNI plugin and, with
    ``cni_conf``, a network configuration, under ``root`` (``/`` on a real host)."""
    unit = render_unit(exe)
    out = [
        _write(root / UNIT_DIR / UNIT_NAME, unit, 0o644, "systemd unit"),
        _write(root / ENV_FILE, ENV_TEMPLATE.format(peers=" ".join(peers)), 0o600, "environment file",
               keep=True),
    ]
    plugin = root / CNI_BIN_DIR / "weave-fdp-cni"
    src = cni_plugin_source()
    if src is None:
        out.append(_write(plugin, cni_wrapper(), 0o755, "CNI plugin"))
    else:
        changed = not (plugin.is_symlink() and os.readlink(plugin) == src)
        if changed:
            plugin.parent.mkdir(parents=True, exist_ok=True)
            tmp = plugin.with_name(f".weave-fdp-cni.tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(src)
            os.replace(tmp, plugin)
        out.append(Installed(plugin, "CNI plugin", changed))
    if cni_conf:
        out.append(_write(root / CNI_CONF_DIR / CNI_CONF_NAME, CNI_CONFLIST, 0o644, "CNI network configuration",
                          keep=True))
    return out


def systemd_running() -> bool:
    """True when PID 1 is systemd (its runtime directory exists), so systemctl can be used."""
    return os.path.isdir("/run/systemd/system")


def enable_now() -> str:
    """``systemctl daemon-reload`` and ``enable --now``; FdpError with systemctl's words."""
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]):
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            raise FdpError(f"{' '.join(argv)} failed: {cp.stderr.strip().splitlines()[-1] if cp.stderr.strip() else cp.returncode}",
                           fix="see: journalctl -u weave-fdp")
    return "enabled and started"
