"""tc attach points for BPF programs: tcx hooks where the kernel has them (6.6+,
``tcx``), else clsact direct-action filters.

tcx runs a program without the qdisc and classifier layers (measured: 0.3 µs less
per TCP round trip over fastdp, docs/PERFORMANCE.md), so it is tried first on every
device; a kernel without it, or a device that refuses it, gets a filter: one per
hook (handle 1, priority 1), installed with ``replace``. Either way a restarted
router swaps the program atomically while traffic keeps flowing, and keeps one
with the same name and tag. Removing the clsact qdisc removes every filter on it;
tcx programs are detached one by one.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.datapath.bpf_syscall import BpfSyscallError
from weave_fdp.errors import DatapathError, NotFound
from weave_fdp.plumbing import tcx
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where
from weave_fdp.plumbing.netns import inside, netns_path

log = logging.getLogger(__name__)

PARENT_INGRESS = "ffff:fff2"  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
PARENT_EGRESS = "ffff:fff3"
_HANDLE = 1
_PRIO = 1
DIRECTIONS = ("ingress", "egress")

# Full names of the programs this process knows (``name_programs``): the kernel keeps
# only 15 characters of a tcx program's name, a tc filter the whole of it.
_FULL_NAMES: dict[str, str] = {}
_tcx_missing = False   # this kernel refused tcx once: filters from then on


def name_programs(*names: str) -> None:
    """Make ``programs`` report these programs by their full names when at tcx hooks."""
    for name in names:
        _FULL_NAMES[name[:tcx.NAME_LEN]] = name


@contextmanager
def _tcx_in(netns: NetnsRef, ifname: str) -> Iterator[int | None]:
    """This thread in ``netns`` with ``ifname``'s ifindex there, for the tcx calls; None
    when tcx is out (a kernel without it, or a netlink handle given for the namespace)."""
    if _tcx_missing or isinstance(netns, IPRoute):
        yield None
        return
    import socket

    with inside(str(netns_path(netns))) if netns else _here():
        try:
            idx = socket.if_nametoindex(ifname)
        except OSError:
            yield None
            return
        yield idx


@contextmanager
def _here() -> Iterator[None]:
    yield


def _tcx_missing_now(exc: Exception) -> None:
    global _tcx_missing
    if not _tcx_missing:
        log.info("tc: this kernel has no tcx hooks (%s): BPF programs attach as clsact filters", exc)
    _tcx_missing = True


def hook_kind(ifname: str, prog_name: str, *, direction: str = "ingress", netns: NetnsRef = None) -> str | None:
    """Where ``prog_name`` runs at ``ifname``'s ``direction`` hook: "tcx", "clsact", or None."""
    try:
        with _tcx_in(netns, ifname) as idx:
            if idx is not None and tcx.find(idx, direction, prog_name) is not None:
                return "tcx"
    except tcx.Unsupported:
        pass
    return "clsact" if prog_name in _filter_names(ifname, direction=direction, netns=netns) else None


def _parent(direction: str) -> str:
    return PARENT_INGRESS if direction == "ingress" else PARENT_EGRESS


def attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str = "ingress",
           netns: NetnsRef = None, tag: str | None = None, prio: int = _PRIO, handle: int = _HANDLE) -> bool:
    """Attach program ``prog_fd`` at ``ifname``'s ``direction`` hook: at tcx when the kernel
    has it (in place of a program of the same name there, else last), else as the clsact
    filter at ``prio``/``handle`` (other filters of the hook stay).

    With ``tag`` (the program's tag), an attached program with the same name and tag
    (same code, same maps after a router restart) is kept: no swap, no glitch.
    Returns True when it attached, False when it kept the one there.
    """
    try:
        attached = _tcx_attach(ifname, prog_fd, prog_name, direction=direction, netns=netns, tag=tag)
    except tcx.Unsupported as exc:
        _tcx_missing_now(exc)
    except BpfSyscallError as exc:
        log.warning("tc: %s refused %s at tcx %s (%s): attaching it as a clsact filter",
                    ifname, prog_name, direction, exc)
    else:
        if attached is not None:
            # a filter an earlier router left would run the program a second time
            # after every TC_ACT_UNSPEC
            _del_filter(ifname, prio=prio, handle=handle, direction=direction, netns=netns)
            return attached
    return _filter_attach(ifname, prog_fd, prog_name, direction=direction, netns=netns, tag=tag,
                          prio=prio, handle=handle)


def _tcx_attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str, netns: NetnsRef,
                tag: str | None) -> bool | None:
    """tcx's half of :func:`attach`; None when tcx is out for this call."""
    with _tcx_in(netns, ifname) as idx:
        if idx is None:
            if not _tcx_missing and not isinstance(netns, IPRoute):
                raise NotFound(f"interface {ifname} does not exist in {_where(netns)}")
            return None
        cur = tcx.find(idx, direction, prog_name)
        if cur is not None and tag is not None and cur.tag == tag:
            return False
        tcx.attach(idx, prog_fd, direction, replace_id=cur.id if cur is not None else None)
        name_programs(prog_name)
        return True


def _filter_attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str, netns: NetnsRef,
                   tag: str | None, prio: int, handle: int) -> bool:
    """The clsact filter half of :func:`attach`."""
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


def _tcx_detach(ifname: str, *, directions: tuple[str, ...], netns: NetnsRef, name: str | None = None) -> bool:
    """Detach the tcx programs (called ``name``, or all) of ``ifname``; True when one went."""
    gone = False
    try:
        with _tcx_in(netns, ifname) as idx:
            if idx is None:
                return False
            for d in directions:
                for a in tcx.attached(idx, d):
                    if name is None or a.name == name[:tcx.NAME_LEN]:
                        gone = tcx.detach(idx, a.id, d) or gone
    except tcx.Unsupported:
        pass
    return gone


def detach_all(ifname: str, *, netns: NetnsRef = None) -> bool:
    """Remove every BPF program of ``ifname``'s hooks (tcx and the clsact qdisc with its
    filters); False if there was none."""
    gone = _tcx_detach(ifname, directions=DIRECTIONS, netns=netns)
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return gone
        try:
            ipr.tc("del", "clsact", index=idx)
        except NetlinkError as exc:
            if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return gone
            raise DatapathError(f"cannot remove clsact qdisc of {ifname} in {_where(netns)}: {exc}") from exc
        return True


def detach(ifname: str, prog_name: str, *, prio: int = _PRIO, handle: int = _HANDLE, direction: str = "ingress",
           netns: NetnsRef = None) -> bool:
    """Remove program ``prog_name`` from ``ifname``'s hook: at tcx, and the filter at
    ``prio``/``handle`` (the others and the qdisc stay); False when neither was there."""
    gone = _tcx_detach(ifname, directions=(direction,), netns=netns, name=prog_name)
    return _del_filter(ifname, prio=prio, handle=handle, direction=direction, netns=netns) or gone


def _del_filter(ifname: str, *, prio: int, handle: int, direction: str = "ingress",
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
    """Devices whose ``direction`` hook runs a program named ``prog_name`` (reset finds them so)."""
    with _handle(netns) as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return [n for n in names if n and prog_name in programs(n, direction=direction, netns=netns)]


def programs(ifname: str, *, direction: str = "ingress", netns: NetnsRef = None) -> list[str]:
    """Names of the BPF programs at ``ifname``'s ``direction`` hook (tcx first, as they run;
    empty when none). A tcx program's name is as the kernel keeps it (15 characters),
    or whole when ``name_programs`` told it."""
    names: list[str] = []
    try:
        with _tcx_in(netns, ifname) as idx:
            if idx is not None:
                names = [_FULL_NAMES.get(a.name, a.name) for a in tcx.attached(idx, direction)]
    except tcx.Unsupported:
        pass
    return names + _filter_names(ifname, direction=direction, netns=netns)


def _filter_names(ifname: str, *, direction: str, netns: NetnsRef) -> list[str]:
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
    """{"id", "tag", "name"} of the BPF program at ``ifname``'s hook (the first one, or the
    one whose name starts like ``name``), or None.

    tcx first; for filters, pyroute2 does not decode TCA_BPF_ID/TAG, so this asks ``tc -j``.
    """
    import json
    import subprocess

    try:
        with _tcx_in(netns, ifname) as idx:
            for a in tcx.attached(idx, direction) if idx is not None else []:
                if name is None or a.name == name[:tcx.NAME_LEN]:
                    return {"id": a.id, "tag": a.tag, "name": a.name}
    except tcx.Unsupported:
        pass
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
