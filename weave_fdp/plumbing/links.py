"""Links: veth pairs, bridges, addresses, up/down, MTU, moving and renaming.

Every function takes ``netns``: a namespace name, None (this process's namespace),
or an open handle from :func:`weave_fdp.plumbing.netns.netns_ipr` (reuse one handle
for a batch of calls: each new handle costs a fork). Creation refuses what exists
(``AlreadyExists``) unless ``exist_ok``; deletion tolerates only "already gone".

Example (what the router's ``attach`` does)::

    create_veth("vethwepl1234", peer="ethwe", netns="t1-h1", peer_netns="t1-h1-c1", mtu=1376)
    set_master("vethwepl1234", "weave", netns="t1-h1")
    add_address("ethwe", "10.32.1.1/12", netns="t1-h1-c1")
    set_up("ethwe", netns="t1-h1-c1")
"""

from __future__ import annotations

import errno
import socket
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.errors import AlreadyExists, FdpError, NotFound, PermissionDenied, UsageError
from weave_fdp.plumbing.netns import netns_ipr

NetnsRef = Union[str, None, IPRoute]
IFNAMSIZ = 15  # usable characters of a Linux interface name


@dataclass(frozen=True)
class LinkInfo:
    """What one interface looks like (a snapshot)."""

    index: int
    name: str
    kind: str | None
    mtu: int
    up: bool
    mac: str | None
    master: int | None
    addresses: tuple[str, ...] = ()


@contextmanager
def _handle(netns: NetnsRef) -> Iterator[IPRoute]:
    """Yield an IPRoute for ``netns``; only close handles we opened here."""
    if isinstance(netns, IPRoute):
        yield netns
    else:
        with netns_ipr(netns) as ipr:
            yield ipr


def _where(netns: NetnsRef) -> str:
    if isinstance(netns, IPRoute):
        name = netns.status.get("netns") if hasattr(netns, "status") else None
        return f"namespace {name}" if name else "this namespace"
    return f"namespace {netns}" if netns else "this namespace"


@contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    """Turn netlink errno into typed errors that name the thing."""
    try:
        yield
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            raise AlreadyExists(f"{what}: already exists") from exc
        if exc.code in (errno.ENODEV, errno.ENOENT):
            raise NotFound(f"{what}: no such device") from exc
        if exc.code == errno.EPERM:
            raise PermissionDenied(f"{what}: operation not permitted", fix="run as root") from exc
        raise FdpError(f"{what}: {exc.args[1] if len(exc.args) > 1 else exc}") from exc


def check_ifname(name: str) -> str:
    """Return ``name`` if the kernel accepts it as an interface name, else raise ``UsageError``."""
    if (not isinstance(name, str) or not name or len(name.encode()) > IFNAMSIZ or "/" in name or ":" in name
            or any(c.isspace() for c in name) or name in (".", "..")):
        raise UsageError(f"bad interface name {str(name)[:40]!r}",
                         fix=f"use 1-{IFNAMSIZ} characters, no '/', ':' or spaces")
    return name


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_index(name: str, netns: NetnsRef = None) -> int | None:
    """Interface index of ``name`` in ``netns``, or None when there is no such link."""
    with _handle(netns) as ipr:
        return _index(ipr, name)


def link_exists(name: str, netns: NetnsRef = None) -> bool:
    """True when ``netns`` has a link called ``name``."""
    return link_index(name, netns) is not None


def _require(ipr: IPRoute, name: str, netns: NetnsRef) -> int:
    idx = _index(ipr, name)
    if idx is None:
        raise NotFound(f"interface {name} not found in {_where(netns)}")
    return idx


def _info(ipr: IPRoute, msg: Any) -> LinkInfo:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    idx = msg["index"]
    addrs = tuple(
        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx)
    )
    return LinkInfo(
        index=idx,
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mtu=msg.get_attr("IFLA_MTU"),
        up=bool(msg["flags"] & 1),  # IFF_UP
        mac=msg.get_attr("IFLA_ADDRESS"),
        master=msg.get_attr("IFLA_MASTER"),
        addresses=addrs,
    )


def get_link(name: str, netns: NetnsRef = None) -> LinkInfo:
    """Snapshot of interface ``name`` (``NotFound`` when missing)."""
    with _handle(netns) as ipr:
        idx = _require(ipr, name, netns)
        return _info(ipr, ipr.get_links(idx)[0])


def list_links(netns: NetnsRef = None) -> list[LinkInfo]:
    """Snapshots of every interface in ``netns``, by index."""
    with _handle(netns) as ipr:
        return sorted((_info(ipr, m) for m in ipr.get_links()), key=lambda li: li.index)


def create_veth(name: str, peer: str, *, netns: NetnsRef = None, peer_netns: str | None = None,
                mtu: int | None = None, up: bool = True, mac: str | None = None,
                peer_mac: str | None = None, exist_ok: bool = False) -> int:
    """Create the veth pair ``name`` (in ``netns``) <-> ``peer`` (in ``peer_netns``, default the same).

    The peer is created directly in its namespace, so nothing ever appears in the
    initial namespace and the peer name cannot clash there. Both ends get ``mtu``
    and are set up when ``up``. Returns the index of ``name``. With ``exist_ok`` an
    existing ``name`` is kept as it is.
    """
    check_ifname(name)
    check_ifname(peer)
    with _handle(netns) as ipr:
        if _index(ipr, name) is not None:
            if exist_ok:
                return _index(ipr, name)  # type: ignore[return-value]
            raise AlreadyExists(f"interface {name} already exists in {_where(netns)}",
                                fix="delete it or choose another name")
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_netns is not None:
            peer_spec["net_ns_fd"] = peer_netns
        if mtu is not None:
            peer_spec["mtu"] = mtu
        if peer_mac is not None:
            peer_spec["address"] = peer_mac
        kw: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer_spec}
        if mtu is not None:
            kw["mtu"] = mtu
        if mac is not None:
            kw["address"] = mac
        with _netlink_errors(f"veth {name} <-> {peer} ({_where(netns)} <-> "
                             f"{'namespace ' + peer_netns if peer_netns else 'same namespace'})"):
            ipr.link("add", **kw)
        idx = _require(ipr, name, netns)
        if up:
            ipr.link("set", index=idx, state="up")
    if up:
        set_up(peer, netns=peer_netns if peer_netns is not None else netns)
    return idx


def create_bridge(name: str, *, netns: NetnsRef = None, mtu: int | None = None, up: bool = True,
                  exist_ok: bool = True, **bridge_opts: Any) -> int:
    """Create bridge ``name`` in ``netns`` (kept as it is when it exists and ``exist_ok``).

    ``bridge_opts`` are pyroute2 bridge attributes, e.g. ``br_mcast_snooping=0``.
    """
    check_ifname(name)
    with _handle(netns) as ipr:
        idx = _index(ipr, name)
        if idx is not None:
            if not exist_ok:
                raise AlreadyExists(f"interface {name} already exists in {_where(netns)}")
            return idx
        kw: dict[str, Any] = {"ifname": name, "kind": "bridge", **bridge_opts}
        if mtu is not None:
            kw["mtu"] = mtu
        with _netlink_errors(f"bridge {name} in {_where(netns)}"):
            ipr.link("add", **kw)
        idx = _require(ipr, name, netns)
        if up:
            ipr.link("set", index=idx, state="up")
        return idx


def delete_link(name: str, netns: NetnsRef = None) -> bool:
    """Delete link ``name``; False when it was already gone (a veth takes its peer with it)."""
    with _handle(netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise FdpError(f"cannot delete interface {name} in {_where(netns)}: {exc}") from exc
        return True


def _set(name: str, netns: NetnsRef, what: str, **kw: Any) -> None:
    with _handle(netns) as ipr:
        idx = _require(ipr, name, netns)
        with _netlink_errors(f"{what} on {name} in {_where(netns)}"):
            ipr.link("set", index=idx, **kw)


def set_up(name: str, netns: NetnsRef = None) -> None:
    """Set interface ``name`` administratively up."""
    _set(name, netns, "set up", state="up")


def set_down(name: str, netns: NetnsRef = None) -> None:
    """Set interface ``name`` administratively down."""
    _set(name, netns, "set down", state="down")


def set_mtu(name: str, mtu: int, netns: NetnsRef = None) -> None:
    """Set the MTU of ``name`` (the kernel refuses values outside the device's range)."""
    if not 68 <= mtu <= 65535:
        raise UsageError(f"MTU {mtu} of {name} out of range", fix="use 68..65535")
    _set(name, netns, f"set mtu {mtu}", mtu=mtu)


def set_gso_max_size(name: str, size: int, netns: NetnsRef = None) -> None:
    """Cap the GSO super-frames this host's stack builds for ``name`` at ``size`` bytes."""
    if not 1 <= size <= 65536:
        raise UsageError(f"gso_max_size {size} of {name} out of range", fix="use 1..65536")
    _set(name, netns, f"set gso_max_size {size}", gso_max_size=size)


# IPv4 "BIG TCP" limits (kernel 6.3+): GSO super-frames over 64 KiB for IPv4 (the IPv4 total
# length is then 0). pyroute2 0.9 does not name these attributes yet: added here, by number,
# where it lacks them (include/uapi/linux/if_link.h: IFLA_GSO_IPV4_MAX_SIZE = 63, _GRO_ = 64).
IFLA_GSO_IPV4_MAX_SIZE = 63
IFLA_GRO_IPV4_MAX_SIZE = 64


def _name_big_tcp_attrs() -> None:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    names = [n for n, _ in ifinfmsg.nla_map]
    if "IFLA_GSO_IPV4_MAX_SIZE" in names:
        return
    pad = [(f"IFLA_UNNAMED_{i}", "hex") for i in range(len(names), IFLA_GSO_IPV4_MAX_SIZE)]
    ifinfmsg.nla_map = (*ifinfmsg.nla_map, *pad, ("IFLA_GSO_IPV4_MAX_SIZE", "uint32"),
                        ("IFLA_GRO_IPV4_MAX_SIZE", "uint32"))
    ifinfmsg._nlmsg_base__compiled_nla = False    # a message parsed before now compiled the old table


_name_big_tcp_attrs()


def get_gso_ipv4_max_size(name: str, netns: NetnsRef = None) -> int | None:
    """The IPv4 GSO super-frame limit of ``name`` (bytes); None where the kernel has none
    (before 6.3: IPv4 super-frames stay within 64 KiB)."""
    with _handle(netns) as ipr:
        v = ipr.get_links(_require(ipr, name, netns))[0].get_attr("IFLA_GSO_IPV4_MAX_SIZE")
        return None if v is None else int(v)


def big_tcp_supported(netns: NetnsRef = None) -> bool:
    """Whether this kernel lets IPv4 GSO super-frames exceed 64 KiB (it reports
    ``gso_ipv4_max_size`` on its loopback)."""
    try:
        return get_gso_ipv4_max_size("lo", netns) is not None
    except FdpError:
        return False


def set_gso_ipv4_max_size(name: str, size: int, netns: NetnsRef = None) -> None:
    """Let this host's stack build IPv4 GSO super-frames of up to ``size`` bytes on ``name``
    (over 64 KiB: "BIG TCP"). The kernel refuses more than the device's ``tso_max_size``."""
    if not 1 <= size <= 0x7FFFFFFF:
        raise UsageError(f"gso_ipv4_max_size {size} of {name} out of range", fix="use 1..2147483647")
    _set(name, netns, f"set gso_ipv4_max_size {size}", IFLA_GSO_IPV4_MAX_SIZE=size)


def get_gso_max_size(name: str, netns: NetnsRef = None) -> int:
    """The GSO super-frame limit of ``name`` (bytes)."""
    with _handle(netns) as ipr:
        return int(ipr.get_links(_require(ipr, name, netns))[0].get_attr("IFLA_GSO_MAX_SIZE") or 0)


def disable_ipv6_autoconf(name: str, netns: NetnsRef = None) -> None:
    """No IPv6 link-local address on ``name`` (addr_gen_mode none): an IPv4-only link
    then stays silent (no router solicitations, no DAD). Set it before the link goes up."""
    _set(name, netns, "set addrgenmode none",
         IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]})


def set_master(name: str, master: str, netns: NetnsRef = None) -> None:
    """Make ``name`` a port of bridge ``master`` (both in ``netns``)."""
    with _handle(netns) as ipr:
        midx = _require(ipr, master, netns)
        idx = _require(ipr, name, netns)
        with _netlink_errors(f"enslave {name} to {master} in {_where(netns)}"):
            ipr.link("set", index=idx, master=midx)


def rename_link(name: str, new_name: str, netns: NetnsRef = None) -> None:
    """Rename ``name`` to ``new_name`` (the link is set down first; the kernel requires it)."""
    check_ifname(new_name)
    with _handle(netns) as ipr:
        idx = _require(ipr, name, netns)
        with _netlink_errors(f"rename {name} to {new_name} in {_where(netns)}"):
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, ifname=new_name)


def move_to_netns(name: str, target_netns: str, *, netns: NetnsRef = None,
                  new_name: str | None = None, up: bool = True) -> None:
    """Move ``name`` from ``netns`` into ``target_netns``, renaming it to ``new_name``
    on the way (one netlink request, so no clash in either namespace), and set it up."""
    final = check_ifname(new_name) if new_name else name
    with _handle(netns) as ipr:
        idx = _require(ipr, name, netns)
        kw: dict[str, Any] = {"net_ns_fd": target_netns}
        if new_name:
            kw["ifname"] = new_name
        with _netlink_errors(f"move {name} to namespace {target_netns} as {final}"):
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, **kw)
    if up:
        set_up(final, netns=target_netns)


def _split_cidr(cidr: str) -> tuple[str, int, int]:
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise UsageError(f"bad address {cidr!r}", fix="use ADDRESS/PREFIXLEN, e.g. 10.32.1.1/12") from exc
    if "/" not in cidr:
        raise UsageError(f"address {cidr!r} lacks a prefix length", fix="e.g. 10.32.1.1/12")
    return str(iface.ip), iface.network.prefixlen, iface.version


def add_address(name: str, cidr: str, netns: NetnsRef = None, *, exist_ok: bool = True) -> None:
    """Add ``cidr`` (e.g. ``192.0.2.1/24``) to ``name``; an existing equal address is fine
    when ``exist_ok``."""
    ip, plen, _ = _split_cidr(cidr)
    with _handle(netns) as ipr:
        idx = _require(ipr, name, netns)
        try:
            ipr.addr("add", index=idx, address=ip, prefixlen=plen)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and exist_ok:
                return
            with _netlink_errors(f"add address {cidr} to {name} in {_where(netns)}"):
                raise


def del_address(name: str, cidr: str, netns: NetnsRef = None) -> bool:
    """Remove ``cidr`` from ``name``; False when it was not there (or the link is gone)."""
    ip, plen, _ = _split_cidr(cidr)
    with _handle(netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.addr("del", index=idx, address=ip, prefixlen=plen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                return False
            raise FdpError(f"cannot remove address {cidr} from {name} in {_where(netns)}: {exc}") from exc
        return True


def addresses(name: str, netns: NetnsRef = None) -> list[str]:
    """Addresses of ``name`` as CIDR strings."""
    return list(get_link(name, netns).addresses)


def add_route(dst: str, *, dev: str | None = None, gateway: str | None = None,
              netns: NetnsRef = None, exist_ok: bool = True) -> None:
    """Add a route to ``dst`` (CIDR or ``default``) via ``dev`` and/or ``gateway``."""
    kw: dict[str, Any] = {"dst": "0.0.0.0/0" if dst == "default" else dst}
    if gateway:
        kw["gateway"] = gateway
    with _handle(netns) as ipr:
        if dev:
            kw["oif"] = _require(ipr, dev, netns)
        try:
            ipr.route("add", **kw)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and exist_ok:
                return
            with _netlink_errors(f"add route {dst} in {_where(netns)}"):
                raise


def routes_overlapping(cidr: str, *, skip_devs: tuple[str, ...] = ("weave",),
                       netns: NetnsRef = None) -> list[str]:
    """IPv4 routes of the main table that overlap ``cidr`` ("DST dev NAME"), the default
    route and routes on ``skip_devs`` (our own bridge) left out."""
    want = ipaddress.IPv4Network(cidr, strict=False)
    out = []
    with _handle(netns) as ipr:
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            plen = r["dst_len"]
            if plen == 0:
                continue
            dev = names.get(r.get_attr("RTA_OIF"), "?")
            if dev in skip_devs:
                continue
            net = ipaddress.IPv4Network(f"{r.get_attr('RTA_DST')}/{plen}", strict=False)
            if net.overlaps(want):
                out.append(f"{net} dev {dev}")
    return out
