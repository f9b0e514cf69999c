"""tc clsact attach points for BPF programs (direct-action filters).

One filter per hook (handle 1, priority 1), installed with ``replace`` so a
restarted router swaps the program atomically while traffic keeps flowing.
Removing the clsact qdisc removes every filter on it.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.errors import DatapathError, NotFound
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where

log = logging.getLogger(__name__)

PARENT_INGRESS = "ffff:fff2"  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
PARENT_EGRESS = "ffff:fff3"
_HANDLE = 1
_PRIO = 1


def _parent(direction: str) -> str:
    return PARENT_INGRESS if direction == "ingress" else PARENT_EGRESS


def attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str = "ingress",
           netns: NetnsRef = None, tag: str | None = None, prio: int = _PRIO, handle: int = _HANDLE) -> bool:
    """Attach program ``prog_fd`` at ``ifname``'s tc ``direction`` hook (replacing what was there
    at ``prio``/``handle``: other filters of the hook stay).

    With ``tag`` (the program's tag), an attached program with the same name and tag
    (same code, same maps after a router restart) is kept: no swap, no glitch.
    Returns True when it attached, False when it kept the one there.
    """
    if tag is not None:
        cur = program_info(ifname, direction=direction, netns=netns if isinstance(netns, str) else None,
                           name=prog_name)
        if cur and cur.get("tag") == tag and str(cur.get("name", "")).startswith(prog_name[:15]):
            return False
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            raise NotFound(f"interface {ifname} does not exist in {_where(netns)}")
        try:
            ipr.tc("add", "clsact", index=idx)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise DatapathError(f"cannot add clsact qdisc to {ifname} in {_where(netns)}: {exc}") from exc
        try:
            ipr.tc("replace-filter", "bpf", index=idx, handle=handle, prio=prio, fd=prog_fd,
                   name=prog_name, parent=_parent(direction), classid=1, direct_action=True)
        except NetlinkError as exc:
            raise DatapathError(f"cannot attach BPF program {prog_name} to {ifname} {direction} "
                                f"in {_where(netns)}: {exc}",
                                fix="run `weave-fdp probe` to check the kernel") from exc
    return True


def detach_all(ifname: str, *, netns: NetnsRef = None) -> bool:
    """Remove the clsact qdisc (and so every tc BPF program) of ``ifname``; False if none was there."""
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return False
        try:
            ipr.tc("del", "clsact", index=idx)
        except NetlinkError as exc:
            if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return False
            raise DatapathError(f"cannot remove clsact qdisc of {ifname} in {_where(netns)}: {exc}") from exc
        return True


def detach_filter(ifname: str, *, prio: int, handle: int, direction: str = "ingress",
                  netns: NetnsRef = None) -> bool:
    """Remove one BPF filter (``prio``/``handle``) of ``ifname``'s hook, leaving the others
    and the qdisc; False when it (or the device) was not there."""
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return False
        try:
            ipr.tc("del-filter", "bpf", index=idx, handle=handle, prio=prio, parent=_parent(direction))
        except NetlinkError as exc:
            if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return False
            raise DatapathError(f"cannot remove the BPF filter of {ifname} {direction} in {_where(netns)}: "
                                f"{exc}") from exc
        return True


def devices_with_program(prog_name: str, *, direction: str = "ingress", netns: NetnsRef = None) -> list[str]:
    """Devices whose tc ``direction`` hook runs a program named ``prog_name`` (reset finds them so)."""
    with _handle(netns) as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return [n for n in names if n and prog_name in programs(n, direction=direction, netns=netns)]


def programs(ifname: str, *, direction: str = "ingress", netns: NetnsRef = None) -> list[str]:
    """Names of the BPF programs attached at ``ifname``'s tc hook (empty when none)."""
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return []
        try:
            filters = ipr.get_filters(index=idx, parent=_parent(direction))
        except NetlinkError:
            return []
        names: list[str] = []
        for f in filters:
            opts: Any = f.get_attr("TCA_OPTIONS")
            if opts is not None and opts.get_attr("TCA_BPF_NAME"):
                names.append(opts.get_attr("TCA_BPF_NAME"))
        return names


def program_id(ifname: str, *, direction: str = "ingress", netns: str | None = None) -> int | None:
    """Kernel id of the BPF program attached at ``ifname``'s tc hook, or None."""
    info = program_info(ifname, direction=direction, netns=netns)
    return int(info["id"]) if info and info.get("id") else None


def program_info(ifname: str, *, direction: str = "ingress", netns: str | None = None,
                 name: str | None = None) -> dict | None:
    """{"id", "tag", "name"} of the BPF program at ``ifname``'s tc hook (the first one, or the
    one whose name starts like ``name``), or None.

    pyroute2 does not decode TCA_BPF_ID/TAG, so this asks ``tc -j``.
    """
    import json
    import subprocess

    argv = ["tc", "-j", "filter", "show", "dev", ifname, direction]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    cp = subprocess.run(argv, capture_output=True, text=True)
    if cp.returncode != 0:
        return None
    try:
        for f in json.loads(cp.stdout or "[]"):
            prog = (f.get("options") or {}).get("prog") or {}
            if prog.get("id") and (name is None or str(prog.get("name", "")).startswith(name[:15])):
                return prog
    except (ValueError, AttributeError):
        return None
    return None
