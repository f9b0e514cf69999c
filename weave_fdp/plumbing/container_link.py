"""A container's link to the weave network: veth ``vethwepl<suffix>`` on bridge
``weave`` in the host namespace, ``ethwe`` in the container's namespace with its
addresses, the overlay MTU and a 224.0.0.0/4 route (multicast over weave).

Targets are network namespaces given as a path (``/run/netns/NAME`` or
``/proc/PID/ns/net``); the suffix is derived from the namespace's inode, so the
same container always gets the same veth name and attaching twice is harmless.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.addresses import host_cidrs
from weave_fdp.errors import AlreadyExists, DatapathError, NotFound
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where, check_ifname, delete_link
from weave_fdp.plumbing.netns import inside
from weave_fdp.plumbing.weave_bridge import BRIDGE

log = logging.getLogger(__name__)

CONTAINER_IFNAME = "ethwe"
HOST_PREFIX = "vethwepl"
MULTICAST_ROUTE = "224.0.0.0/4"


@dataclass(frozen=True)
class ContainerLink:
    """What ``ps`` shows for one attached container."""

    host_ifname: str
    host_ifindex: int
    mac: str
    cidrs: tuple[str, ...]
    netns_path: str


def host_ifname_for(netns_path: str) -> str:
    """``vethwepl`` + 7 hex digits derived from the namespace's identity (dev, inode)."""
    try:
        st = os.stat(netns_path)
    except OSError as exc:
        raise NotFound(f"network namespace {netns_path} does not exist",
                       fix="check the target (netns:NAME or pid:PID)") from exc
    digest = hashlib.sha1(f"{st.st_dev}:{st.st_ino}".encode()).hexdigest()
    return HOST_PREFIX + digest[:7]


def _open_target(netns_path: str) -> IPRoute:
    """A netlink handle inside the target namespace."""
    with inside(netns_path):
        return IPRoute()


def check_cidrs(cidrs: list[str]) -> list[str]:
    """Validate ADDRESS/PREFIXLEN strings by the rules of every attach (weave_fdp/addresses.py);
    normalized copies."""
    return host_cidrs(cidrs)


def _addresses(ns: IPRoute, idx: int) -> tuple[str, ...]:
    return tuple(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ns.get_addr(index=idx, family=2))


def _set_gso_ipv4_max_size(ipr: IPRoute, idx: int, size: int, where: str) -> None:
    """Best effort, like ``_set_gso_max_size``: a kernel without BIG TCP keeps 64 KiB."""
    try:
        ipr.link("set", index=idx, IFLA_GSO_IPV4_MAX_SIZE=size)
    except NetlinkError as exc:
        log.info("gso_ipv4_max_size %d not set on a container link in %s (%s): 64 KiB stays", size, where, exc)


def _set_gso_max_size(cns: IPRoute, idx: int, size: int, where: str) -> None:
    """Best effort: a kernel that refuses to set it (older ones keep the limit read-only)
    keeps its default, and the sleeve sends such super-frames in two trains instead of one."""
    try:
        cns.link("set", index=idx, gso_max_size=size)
    except NetlinkError as exc:
        log.info("gso_max_size %d not set on the container link in %s (%s): the kernel's default stays",
                 size, where, exc)


def attach(netns_path: str, cidrs: list[str], *, mtu: int, host_netns: NetnsRef = None,
           multicast_route: bool = True, ifname: str = CONTAINER_IFNAME,
           gso_max_size: int | None = None, gso_ipv4_max_size: int | None = None) -> ContainerLink:
    """Give the container at ``netns_path`` an ``ethwe`` (or ``ifname``) on bridge ``weave`` with ``cidrs``.

    ``gso_max_size``: the largest GSO super-frame the container's stack builds on it
    (the sleeve carries one that fits a UDP GSO train with one send; see
    ``datapath.sleeve.sizing``); None leaves the kernel's default. ``gso_ipv4_max_size``:
    the same for IPv4 on kernels with BIG TCP (over 64 KiB), set on both ends of the pair
    (the bridge would cut what its port does not pass).

    Idempotent: an existing link is kept and missing addresses added. On failure
    everything this call created is removed again (nothing half-attached).
    """
    cidrs = check_cidrs(cidrs)
    ifname = check_ifname(ifname)
    host_if = host_ifname_for(netns_path)
    created = False
    cns = _open_target(netns_path)
    try:
        with _handle(host_netns) as ipr:
            if _index(ipr, BRIDGE) is None:
                raise NotFound(f"bridge {BRIDGE} does not exist in {_where(host_netns)}",
                               fix="is the router running? (`weave-fdp launch`)")
            cidx = cns.link_lookup(ifname=ifname)
            hidx = _index(ipr, host_if)
            if cidx and hidx is None:
                raise AlreadyExists(f"the container at {netns_path} already has an {ifname} "
                                    "that is not ours", fix="remove it or detach first")
            if hidx is None:
                fd = os.open(netns_path, os.O_RDONLY)
                try:
                    ipr.link("add", ifname=host_if, kind="veth", mtu=mtu,
                             peer={"ifname": ifname, "net_ns_fd": fd, "mtu": mtu})
                finally:
                    os.close(fd)
                created = True
                hidx = _index(ipr, host_if)
                assert hidx is not None
            ipr.link("set", index=hidx, master=_index(ipr, BRIDGE), mtu=mtu, state="up")
            cidx = cns.link_lookup(ifname=ifname)[0]
            cns.link("set", index=cidx, mtu=mtu, state="up")
            if gso_max_size is not None:
                _set_gso_max_size(cns, cidx, gso_max_size, netns_path)
            if gso_ipv4_max_size is not None:
                _set_gso_ipv4_max_size(cns, cidx, gso_ipv4_max_size, netns_path)
                _set_gso_ipv4_max_size(ipr, hidx, gso_ipv4_max_size, _where(host_netns))
            for cidr in cidrs:
                iface = ipaddress.ip_interface(cidr)
                try:
                    cns.addr("add", index=cidx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            if multicast_route:
                try:
                    cns.route("add", dst=MULTICAST_ROUTE, oif=cidx)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            mac = cns.get_links(cidx)[0].get_attr("IFLA_ADDRESS")
            return ContainerLink(host_if, hidx, mac, _addresses(cns, cidx), netns_path)
    except NetlinkError as exc:
        if created:
            detach(netns_path, host_netns=host_netns)
        raise DatapathError(f"cannot attach {netns_path}: {exc}") from exc
    except BaseException:
        if created:
            detach(netns_path, host_netns=host_netns)
        raise
    finally:
        cns.close()


def remove_addresses(netns_path: str, cidrs: list[str], ifname: str = CONTAINER_IFNAME) -> tuple[str, ...]:
    """Remove ``cidrs`` from the container's ``ethwe`` (or ``ifname``); the addresses left."""
    cns = _open_target(netns_path)
    try:
        idx = cns.link_lookup(ifname=ifname)
        if not idx:
            return ()
        for cidr in check_cidrs(cidrs):
            iface = ipaddress.ip_interface(cidr)
            try:
                cns.addr("del", index=idx[0], address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                    raise
        return _addresses(cns, idx[0])
    finally:
        cns.close()


def add_routes(netns_path: str, ifname: str, routes: list[tuple[str, str | None]]) -> None:
    """Add ``(dst CIDR, gateway or None)`` routes through ``ifname`` in the container (CNI IPAM routes)."""
    cns = _open_target(netns_path)
    try:
        idx = cns.link_lookup(ifname=ifname)
        if not idx:
            raise NotFound(f"interface {ifname} does not exist in {netns_path}")
        for dst, gw in routes:
            kw: dict = {"dst": dst, "oif": idx[0]}
            if gw:
                kw["gateway"] = gw
            try:
                cns.route("add", **kw)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise DatapathError(f"cannot add route {dst} via {gw or ifname} in {netns_path}: "
                                        f"{exc.args[-1] if exc.args else exc}") from exc
    finally:
        cns.close()


def detach(netns_path: str, *, host_netns: NetnsRef = None) -> bool:
    """Remove the container's veth pair; False when it was not attached."""
    return delete_link(host_ifname_for(netns_path), host_netns)


def host_links(*, host_netns: NetnsRef = None) -> dict[str, int]:
    """Host-side container veths on this host: name -> ifindex."""
    with _handle(host_netns) as ipr:
        return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()
                if (link.get_attr("IFLA_IFNAME") or "").startswith(HOST_PREFIX)}


def describe(netns_path: str, *, host_netns: NetnsRef = None,
             ifname: str = CONTAINER_IFNAME) -> ContainerLink | None:
    """The container's link as ``ps`` shows it, or None when not attached."""
    host_if = host_ifname_for(netns_path)
    with _handle(host_netns) as ipr:
        hidx = _index(ipr, host_if)
    if hidx is None:
        return None
    cns = _open_target(netns_path)
    try:
        idx = cns.link_lookup(ifname=ifname)
        if not idx:
            return None
        mac = cns.get_links(idx[0])[0].get_attr("IFLA_ADDRESS")
        return ContainerLink(host_if, hidx, mac, _addresses(cns, idx[0]), netns_path)
    finally:
        cns.close()


def reattach_orphans(*, host_netns: NetnsRef = None) -> list[str]:
    """Put our ports that lost their bridge (``weave`` deleted and made again) back on it:
    container veths and the sleeve's end. Returns their names."""
    from weave_fdp.plumbing.links import list_links, set_master, set_up
    from weave_fdp.plumbing.sleeve_port import BRIDGE_END

    ns = host_netns
    done = []
    for link in list_links(ns):
        if link.master is None and (link.name.startswith(HOST_PREFIX) or link.name == BRIDGE_END):
            set_master(link.name, BRIDGE, ns)
            set_up(link.name, ns)
            done.append(link.name)
    if done:
        log.info("ports back on bridge %s: %s", BRIDGE, ", ".join(done))
    return done
