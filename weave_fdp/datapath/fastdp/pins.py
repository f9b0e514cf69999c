"""Where this host's fastdp maps are pinned, and making sure a bpffs is there.

``ip netns exec`` (how the lab runs each host's router) remounts /sys, hiding the
system's bpffs at /sys/fs/bpf; a bpffs mounted there anew would be a private
instance that a restarted router could not see. So when /sys/fs/bpf is not a
bpffs in our mount namespace, the pins go through /proc/1/root, the initial
mount namespace's view, which every router of the machine shares.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from weave_fdp import paths
from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.errors import DatapathError

log = logging.getLogger(__name__)

BPF_FS_MAGIC = 0xCAFE4A11
BPF_OBJ_NAME_LEN = 16
SYS_BPF = Path("/sys/fs/bpf")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]


def is_bpffs(path: Path) -> bool:
    buf = _Statfs()
    if _libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
        return False
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def bpffs_root() -> Path:
    """Make sure /sys/fs/bpf is a bpffs in this mount namespace; the prefix to use ("/").

    Under ``ip netns exec`` /sys is a fresh sysfs, so the mount made here is private
    to this process's mount namespace; the pins then do not outlive the router, and
    a restarted router recovers the maps from the attached programs instead
    (``recover_pins``), so forwarding state survives either way.
    """
    if is_bpffs(SYS_BPF):
        return Path("/")
    cp = subprocess.run(["mount", "-t", "bpf", "bpf", str(SYS_BPF)], capture_output=True, text=True)
    if cp.returncode != 0 or not is_bpffs(SYS_BPF):
        raise DatapathError(f"cannot mount a bpffs at /sys/fs/bpf: {cp.stderr.strip()}",
                            fix="mount it: mount -t bpf bpf /sys/fs/bpf")
    log.info("mounted bpffs at /sys/fs/bpf")
    return Path("/")


def host_pin_dir(create: bool = True) -> Path:
    """This host's pin directory (``paths.bpf_pin_dir()`` as seen from here)."""
    d = bpffs_root() / paths.bpf_pin_dir().relative_to("/")
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


def remove_pins(pin_dir: Path) -> list[str]:
    """Unlink every pin in ``pin_dir`` and the directory; names removed."""
    removed: list[str] = []
    if not pin_dir.is_dir():
        return removed
    for entry in sorted(pin_dir.iterdir()):
        try:
            entry.unlink()
            removed.append(entry.name)
        except FileNotFoundError:
            pass
    try:
        pin_dir.rmdir()
    except OSError:
        pass
    return removed


def drop_stale_pins(pin_dir: Path, layouts: Mapping[str, tuple[int, int, int | None]]) -> list[str]:
    """Unlink the pinned maps of ``pin_dir`` whose layout is not ``layouts[name]`` (key size,
    value size, max entries; None: any size). A router built for another fastdp ABI left
    them (a struct grew, a map got more entries); reused, they would refuse entries or be
    read with the wrong layout. The programs create them anew and the router refills them
    from its own state (learned MACs and flow counters start over). Names dropped."""
    dropped: list[str] = []
    for name, (key_size, value_size, max_entries) in sorted(layouts.items()):
        path = pin_dir / name
        if not path.exists():
            continue
        try:
            fd = bpf.obj_get(str(path))
        except OSError as exc:
            log.warning("cannot open pinned map %s: %s; unpinning it", path, exc)
            path.unlink(missing_ok=True)
            dropped.append(name)
            continue
        try:
            info = bpf.map_info(fd)
        finally:
            bpf.close(fd)
        if (info.key_size, info.value_size) != (key_size, value_size) or \
                (max_entries is not None and info.max_entries != max_entries):
            log.warning("pinned map %s has key/value/entries %d/%d/%d, this fastdp wants %d/%d/%s: "
                        "unpinned, created anew", name, info.key_size, info.value_size, info.max_entries,
                        key_size, value_size, "any" if max_entries is None else max_entries)
            path.unlink(missing_ok=True)
            dropped.append(name)
    return dropped


def recover_pins(prog_id: int, pin_dir: Path, names: list[str]) -> list[str]:
    """Pin, under ``pin_dir``, the maps used by the loaded program ``prog_id`` whose
    names are in ``names`` (kernel map names are truncated to 15 characters).

    How a restarted router finds the maps of the programs still attached when the
    previous router's pins are out of reach (another mount namespace).
    """
    try:
        fd = bpf.prog_get_fd_by_id(prog_id)
    except bpf.BpfSyscallError:
        return []
    try:
        map_ids = bpf.prog_info(fd).map_ids
    except bpf.BpfSyscallError:
        return []
    finally:
        os.close(fd)
    wanted = {n[:BPF_OBJ_NAME_LEN - 1]: n for n in names}
    pinned = []
    pin_dir.mkdir(parents=True, exist_ok=True)
    for map_id in map_ids:
        try:
            mfd = bpf.map_get_fd_by_id(map_id)
        except bpf.BpfSyscallError:
            continue
        try:
            full = wanted.get(bpf.map_info(mfd).name)
            if full and not (pin_dir / full).exists():
                bpf.obj_pin(mfd, str(pin_dir / full))
                pinned.append(full)
        except bpf.BpfSyscallError as exc:
            log.warning("cannot recover map %d into %s: %s", map_id, pin_dir, exc)
        finally:
            os.close(mfd)
    return pinned
