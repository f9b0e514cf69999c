"""Where the fastdp programs run: a device's tcx hook where the kernel has one (6.6+),
else a clsact direct-action filter (``plumbing/tc.py``).

tcx runs a program without the qdisc and classifier layers (measured: 0.3 µs less per
TCP round trip over fastdp, docs/PERFORMANCE.md), so it is tried first on every
device; a kernel without it, or a device that refuses it, gets the filter. Either
way a restarted router swaps a program atomically while traffic keeps flowing, and
keeps one with the same name and tag. The queries (``programs``, ``program_info``,
``devices_with_program``) see both kinds.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

from weave_fdp.datapath import tcx
from weave_fdp.datapath.bpf_syscall import BpfSyscallError
from weave_fdp.errors import NotFound
from weave_fdp.plumbing import tc
from weave_fdp.plumbing.links import NetnsRef, _handle, _where
from weave_fdp.plumbing.netns import inside, netns_path

log = logging.getLogger(__name__)

DIRECTIONS = ("ingress", "egress")


class Attachment(NamedTuple):
    """What :func:`attach` did: where the program runs ("tcx" or "clsact") and whether it
    was attached now (False: the same program was there already and was kept)."""

    kind: str
    changed: bool

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
    when tcx is out (a kernel without it, a netlink handle given for the namespace) or
    there is no such device."""
    if _tcx_missing or not (netns is None or isinstance(netns, str)):
        yield None
        return
    with inside(str(netns_path(netns))) if netns else nullcontext():
        try:
            idx = socket.if_nametoindex(ifname)
        except OSError:
            idx = None
        yield idx


def _tcx_missing_now(exc: Exception) -> None:
    global _tcx_missing
    if not _tcx_missing:
        log.info("fastdp: this kernel has no tcx hooks (%s): programs attach as clsact filters", exc)
    _tcx_missing = True


def _tcx_attached(netns: NetnsRef, ifname: str, direction: str) -> list[tcx.Attached]:
    try:
        with _tcx_in(netns, ifname) as idx:
            return tcx.attached(idx, direction) if idx is not None else []
    except tcx.Unsupported:
        return []


def attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str = "ingress",
           netns: NetnsRef = None, tag: str | None = None, prio: int = 1, handle: int = 1) -> Attachment:
    """Attach program ``prog_fd`` at ``ifname``'s ``direction`` hook: at tcx when the kernel
    has it (in place of a program of the same name there, else last), else as the clsact
    filter at ``prio``/``handle`` (other filters of the hook stay).

    With ``tag`` (the program's tag), an attached program with the same name and tag
    (same code, same maps after a router restart) is kept: no swap, no glitch.
    """
    try:
        attached = _tcx_attach(ifname, prog_fd, prog_name, direction=direction, netns=netns, tag=tag)
    except tcx.Unsupported as exc:
        _tcx_missing_now(exc)
    except BpfSyscallError as exc:
        log.warning("fastdp: %s refused %s at its tcx %s hook (%s): attaching it as a clsact filter",
                    ifname, prog_name, direction, exc)
    else:
        if attached is not None:
            # a filter an earlier router left would run the program again after every TC_ACT_UNSPEC
            tc.detach_filter(ifname, prio=prio, handle=handle, direction=direction, netns=netns)
            return Attachment("tcx", attached)
    return Attachment("clsact", tc.attach(ifname, prog_fd, prog_name, direction=direction, netns=netns, tag=tag,
                                          prio=prio, handle=handle))


def _tcx_attach(ifname: str, prog_fd: int, prog_name: str, *, direction: str, netns: NetnsRef,
                tag: str | None) -> bool | None:
    """tcx's half of :func:`attach`; None when tcx is out for this call."""
    with _tcx_in(netns, ifname) as idx:
        if idx is None:
            if not _tcx_missing and (netns is None or isinstance(netns, str)):
                raise NotFound(f"interface {ifname} does not exist in {_where(netns)}")
            return None
        cur = tcx.find(idx, direction, prog_name)
        if cur is not None and tag is not None and cur.tag == tag:
            return False
        tcx.attach(idx, prog_fd, direction, replace_id=cur.id if cur is not None else None)
        name_programs(prog_name)
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


def detach(ifname: str, prog_name: str, *, prio: int = 1, handle: int = 1, direction: str = "ingress",
           netns: NetnsRef = None) -> bool:
    """Remove program ``prog_name`` from ``ifname``'s hook: at tcx, and the filter at
    ``prio``/``handle`` (the others and the qdisc stay); False when neither was there."""
    gone = _tcx_detach(ifname, directions=(direction,), netns=netns, name=prog_name)
    return tc.detach_filter(ifname, prio=prio, handle=handle, direction=direction, netns=netns) or gone


def detach_all(ifname: str, *, netns: NetnsRef = None) -> bool:
    """Remove every BPF program of ``ifname``'s hooks (at tcx, and the clsact qdisc with its
    filters); False if there was none."""
    gone = _tcx_detach(ifname, directions=DIRECTIONS, netns=netns)
    return tc.detach_all(ifname, netns=netns) or gone


def programs(ifname: str, *, direction: str = "ingress", netns: NetnsRef = None) -> list[str]:
    """Names of the BPF programs at ``ifname``'s ``direction`` hook, tcx first (as they run);
    empty when none. A tcx program's name is as the kernel keeps it (15 characters), or
    whole when ``name_programs`` told it."""
    at_tcx = [_FULL_NAMES.get(a.name, a.name) for a in _tcx_attached(netns, ifname, direction)]
    return at_tcx + tc.programs(ifname, direction=direction, netns=netns)


def devices_with_program(prog_name: str, *, direction: str = "ingress", netns: NetnsRef = None) -> list[str]:
    """Devices whose ``direction`` hook runs a program named ``prog_name`` (reset finds them so)."""
    with _handle(netns) as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return [n for n in names if n and prog_name in programs(n, direction=direction, netns=netns)]


def hook_kind(ifname: str, prog_name: str, *, direction: str = "ingress", netns: NetnsRef = None) -> str | None:
    """Where ``prog_name`` runs at ``ifname``'s ``direction`` hook: "tcx", "clsact", or None."""
    if any(a.name == prog_name[:tcx.NAME_LEN] for a in _tcx_attached(netns, ifname, direction)):
        return "tcx"
    return "clsact" if prog_name in tc.programs(ifname, direction=direction, netns=netns) else None


def program_info(ifname: str, *, direction: str = "ingress", netns: str | None = None,
                 name: str | None = None) -> dict | None:
    """{"id", "tag", "name"} of the BPF program at ``ifname``'s hook (the first one, or the
    one whose name starts like ``name``), or None: tcx first, then the filters."""
    for a in _tcx_attached(netns, ifname, direction):
        if name is None or a.name == name[:tcx.NAME_LEN]:
            return {"id": a.id, "tag": a.tag, "name": a.name}
    return tc.program_info(ifname, direction=direction, netns=netns, name=name)


def program_id(ifname: str, *, direction: str = "ingress", netns: str | None = None) -> int | None:
    """Kernel id of the BPF program at ``ifname``'s hook, or None."""
    info = program_info(ifname, direction=direction, netns=netns)
    return int(info["id"]) if info and info.get("id") else None
