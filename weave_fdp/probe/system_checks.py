"""Probe checks that read the system: kernel release, BTF, capabilities, kernel headers for bcc."""

from __future__ import annotations

import os
import re

from weave_fdp.probe import model as m
from weave_fdp.probe.model import Check

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
CAP_BPF = 39
BTF_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = b"\x9f\xeb"  # 0xeB9F little-endian

HEADERS_FIX = ("apt-get install linux-headers-amd64 and link /lib/modules/$(uname -r)/build -> "
               "/usr/src/linux-headers-*-amd64, source -> /usr/src/linux-headers-*-common; "
               "`make install` does this")


def check_kernel() -> Check:
    """The running kernel (informational: every feature below is checked for real)."""
    u = os.uname()
    return Check(m.KERNEL, True, f"{u.release} {u.machine}")


def check_btf(path: str = BTF_PATH) -> Check:
    """The kernel's own BTF, needed by CO-RE programs (bcc works without it)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        size = os.path.getsize(path)
    except FileNotFoundError:
        return Check(m.BTF, False, f"{path} missing", "kernel built without CONFIG_DEBUG_INFO_BTF "
                     "(optional: bcc compiles against headers)")
    except OSError as exc:
        return Check(m.BTF, None, f"cannot read {path}: {exc.strerror}", "run as root")
    if magic != BTF_MAGIC:
        return Check(m.BTF, False, f"{path} has no BTF magic", "")
    return Check(m.BTF, True, f"{path} ({size / 1e6:.1f} MB)")


def parse_capeff(status_text: str) -> int | None:
    """The CapEff bit mask from /proc/<pid>/status text."""
    found = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return int(found.group(1), 16) if found else None


def check_capabilities(status_text: str | None = None) -> Check:
    """CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN (and CAP_NET_RAW, for sleeve) in CapEff.

    fastdp needs CAP_NET_ADMIN and either CAP_BPF or (before 5.8, or for some program types)
    CAP_SYS_ADMIN.
    """
    if status_text is None:
        with open("/proc/self/status") as fh:
            status_text = fh.read()
    eff = parse_capeff(status_text)
    if eff is None:
        return Check(m.CAPS, None, "no CapEff in /proc/self/status", "")
    caps = {"CAP_BPF": CAP_BPF, "CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_ADMIN": CAP_SYS_ADMIN,
            "CAP_NET_RAW": CAP_NET_RAW}
    have = {name: bool(eff >> bit & 1) for name, bit in caps.items()}
    detail = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in have.items())
    ok = have["CAP_NET_ADMIN"] and (have["CAP_BPF"] or have["CAP_SYS_ADMIN"])
    if ok:
        return Check(m.CAPS, True, detail)
    return Check(m.CAPS, False, f"{detail}: not root",
                 "run as root (needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")


def _headers_version(path: str) -> str | None:
    name = os.path.basename(os.path.realpath(path))
    found = re.match(r"linux-headers-(.+)", name)
    return found.group(1) if found else None


def check_headers(release: str | None = None, root: str = "/lib/modules") -> Check:
    """Where bcc will find kernel headers: /lib/modules/<release>/{build,source}."""
    release = release or os.uname().release
    build, source = f"{root}/{release}/build", f"{root}/{release}/source"
    if not os.path.isdir(build):
        target = f" (dangling link to {os.readlink(build)})" if os.path.islink(build) else ""
        return Check(m.HEADERS, False, f"{build} missing{target}", HEADERS_FIX)
    has_linux = os.path.isdir(os.path.join(build, "include", "linux"))
    if not has_linux and not os.path.isdir(source):
        return Check(m.HEADERS, False, f"{build} -> {os.path.realpath(build)} has no include/linux "
                     f"and {source} is missing", HEADERS_FIX)
    parts = [f"build -> {os.path.realpath(build)}"]
    if os.path.isdir(source):
        parts.append(f"source -> {os.path.realpath(source)}")
    detail = ", ".join(parts)
    version = _headers_version(build)
    if version and not release.startswith(version.split("-")[0]):
        detail += f" (headers {version}, kernel {release}: bcc compile decides)"
    return Check(m.HEADERS, True, detail)
