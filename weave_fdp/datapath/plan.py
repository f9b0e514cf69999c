"""Pure planning for fastdp: which BPF map entries should exist.

The router turns the mesh (short IDs, unicast next hops, broadcast trees,
connection modes, underlay addresses) and the local containers into a
:class:`DatapathPlan`; the fastdp edge (``datapath.fastdp.loader``) applies it.
Nothing here touches the kernel, so it is tested without root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from weave_fdp.datapath.fastdp import abi
from weave_fdp.errors import CapacityFull, DatapathError

MODES = ("fastdp", "sleeve", "none")
# the limits are the ABI's (bpf/fdp_abi.h through its mirror)
MAX_SHORT_ID = abi.SHORT_ID_MASK
MAX_BCAST_HOPS = abi.MAX_BCAST_HOPS
MAX_LOCAL_PORTS = abi.MAX_LOCAL_PORTS
MAX_PORT_IPS = abi.MAX_PORT_IPS
MAX_CONTAINERS = MAX_LOCAL_PORTS - 1   # fdp_port_addrs holds the host's own port too


def overlay_mtu(underlay_mtu: int) -> int:
    """fastdp MTU: the underlay's minus the VXLAN encapsulation (outer IPv4, UDP, VXLAN, inner Ethernet)."""
    return underlay_mtu - abi.ENCAP_LEN


@dataclass
class MeshInputs:
    """The mesh as the plan needs it (see :func:`build_plan`); what the fastdp overlay
    hands ``HostDatapath.set_mesh``."""

    local: str
    short_ids: dict[str, int]
    unicast: dict[str, str] = field(default_factory=dict)
    broadcast: dict[str, list[str]] = field(default_factory=dict)
    hop_ips: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)   # neighbours whose connection must be encrypted
    xfrm: set[str] = field(default_factory=set)     # ... of them, those whose UDP 6784 rides in ESP
    receive: dict[str, str] = field(default_factory=dict)   # neighbour -> mode its frames are accepted in


@dataclass(frozen=True)
class PeerRoute:
    """How to reach destination peer ``short_id``: via ``nexthop`` at ``nexthop_ip``."""

    short_id: int
    name: str
    nexthop_short_id: int
    nexthop_ip: str
    mode: str           # mode of the connection to the next hop


@dataclass(frozen=True)
class BcastHop:
    short_id: int
    ip: str
    mode: str


@dataclass(frozen=True)
class Neighbour:
    """A direct neighbour as the receive check sees it (fdp_neigh, keyed by its underlay address).

    ``sealed``: its connection must be encrypted, so plain VXLAN from it is never
    delivered; ``xfrm``: encrypted fastdp protects its UDP 6784 with IPsec ESP (the
    kernel's inbound policy refuses what did not arrive in ESP), so its frames are
    accepted on the VXLAN device path even though ``sealed``.
    """

    short_id: int
    ip: str
    mode: str
    sealed: bool = False
    xfrm: bool = False


@dataclass(frozen=True)
class LocalPort:
    """A local container: host-side veth, the MAC of its ethwe and its IPv4 addresses
    (the only source addresses it may send from)."""

    ifname: str
    mac: str
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatapathPlan:
    local_short_id: int
    mtu: int
    peers: Mapping[int, PeerRoute] = field(default_factory=dict)
    bcast: Mapping[int, tuple[BcastHop, ...]] = field(default_factory=dict)
    ports: tuple[LocalPort, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)   # short ID -> peer name (reports)
    neighbours: Mapping[str, Neighbour] = field(default_factory=dict)   # underlay IPv4 -> neighbour
    host: LocalPort | None = None   # the host's own port: the weave bridge (its MAC, its IPv4s)


def _check_short(name: str, sid: int) -> int:
    if not 0 <= sid <= MAX_SHORT_ID:
        raise DatapathError(f"peer {name} has short ID {sid} outside 0..{MAX_SHORT_ID}")
    return sid


def _check_ip(peer: str, ip: str) -> str:
    try:
        return str(ipaddress.IPv4Address(ip))
    except ValueError as exc:
        raise DatapathError(f"peer {peer} has no usable IPv4 underlay address ({ip!r})") from exc


def _mac(mac: str) -> str:
    parts = mac.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise DatapathError(f"bad MAC address {mac!r} of a local container")
    return ":".join(parts)


def build_plan(*, local: str, short_ids: Mapping[str, int], unicast: Mapping[str, str],
               broadcast: Mapping[str, list[str] | tuple[str, ...]], hop_ips: Mapping[str, str],
               modes: Mapping[str, str], ports: Mapping[str, str] | None = None,
               mtu: int = 1450, sealed: Collection[str] = (), xfrm: Collection[str] = (),
               receive: Mapping[str, str] | None = None,
               port_ips: Mapping[str, Collection[str]] | None = None,
               host: LocalPort | None = None) -> DatapathPlan:
    """The plan for peer ``local``.

    ``short_ids``: peer name -> short ID (local included); ``unicast``: destination
    -> next hop (a direct neighbour); ``broadcast``: source -> next hops from this
    peer on that source's tree; ``hop_ips``: neighbour -> underlay IPv4;
    ``modes``: neighbour -> "fastdp" | "sleeve" | "none"; ``ports``: host veth -> MAC;
    ``port_ips``: host veth -> the container's IPv4 addresses (see :func:`local_ports`);
    ``sealed``: neighbours whose connection must be encrypted; ``xfrm``: those of them
    whose UDP 6784 rides in IPsec ESP (see :class:`Neighbour`); ``receive``: neighbour ->
    the mode its frames are accepted in, where it differs from ``modes`` (a neighbour
    whose fastdp heartbeats answer is accepted on fastdp before this side's switch moves
    it there: the two ends of a connection do not switch at the same instant).
    Every neighbour in ``hop_ips`` is an address frames may come from (``neighbours``);
    two neighbours claiming one address leave it to the lower short ID.
    ``host``: the host's own port on the weave bridge (see :func:`host_port`).
    Peers without a route, or whose next hop has no address, are left out (their
    frames are dropped as unknown until a route exists).
    """
    if local not in short_ids:
        raise DatapathError(f"local peer {local} has no short ID yet")
    local_sid = _check_short(local, short_ids[local])
    names = {_check_short(n, s): n for n, s in short_ids.items()}
    peers: dict[int, PeerRoute] = {}
    for dest, hop in unicast.items():
        if dest == local or dest not in short_ids or hop not in short_ids or hop not in hop_ips:
            continue
        mode = modes.get(hop, "none")
        if mode not in MODES:
            raise DatapathError(f"unknown mode {mode!r} for the connection to {hop}")
        peers[short_ids[dest]] = PeerRoute(short_ids[dest], dest, short_ids[hop],
                                           _check_ip(hop, hop_ips[hop]), mode)
    # Peers of the mesh we cannot reach still get a "known" slot with mode none, so
    # frames from them are accepted (a one-way break) and frames to them dropped as no-route.
    for name, sid in short_ids.items():
        if name != local and sid not in peers:
            peers[sid] = PeerRoute(sid, name, sid, "0.0.0.0", "none")
    bcast: dict[int, tuple[BcastHop, ...]] = {}
    for src, hops in broadcast.items():
        if src not in short_ids:
            continue
        entries = tuple(BcastHop(short_ids[h], _check_ip(h, hop_ips[h]), modes.get(h, "none"))
                        for h in hops if h in short_ids and h in hop_ips and h != local)
        if len(entries) > MAX_BCAST_HOPS:
            raise DatapathError(f"peer {local} has {len(entries)} next hops on {src}'s broadcast tree; "
                                f"fastdp carries at most {MAX_BCAST_HOPS}")
        if entries:
            bcast[short_ids[src]] = entries
    port_list = local_ports(ports or {}, port_ips or {})
    neighbours: dict[str, Neighbour] = {}
    for hop, ip in sorted(hop_ips.items(), key=lambda kv: short_ids.get(kv[0], MAX_SHORT_ID + 1)):
        if hop == local or hop not in short_ids:
            continue
        ip = _check_ip(hop, ip)
        mode = (receive or {}).get(hop) or modes.get(hop, "none")
        if mode not in MODES:
            raise DatapathError(f"unknown mode {mode!r} for the connection to {hop}")
        neighbours.setdefault(ip, Neighbour(short_ids[hop], ip, mode, hop in sealed, hop in xfrm))
    return DatapathPlan(local_sid, mtu, peers, bcast, port_list, names, neighbours, host)


def local_ports(ports: Mapping[str, str], port_ips: Mapping[str, Collection[str]]) -> tuple[LocalPort, ...]:
    """The local containers, checked: host veth -> MAC (``ports``) and -> IPv4 addresses
    (``port_ips``, addresses or CIDRs; a veth missing there may send no IPv4 at all)."""
    out = []
    for ifname, mac in sorted(ports.items()):
        ips = []
        for a in port_ips.get(ifname, ()):
            try:
                ips.append(str(ipaddress.IPv4Interface(a).ip))
            except ValueError as exc:
                raise DatapathError(f"bad IPv4 address {a!r} of the container on {ifname}") from exc
        ips = sorted(set(ips))
        if len(ips) > MAX_PORT_IPS:
            raise CapacityFull(f"the container on {ifname} has {len(ips)} IPv4 addresses; fastdp allows "
                                f"at most {MAX_PORT_IPS} per container", fix="detach some of them")
        out.append(LocalPort(ifname, _mac(mac), tuple(ips)))
    if len(out) > MAX_CONTAINERS:
        raise CapacityFull(f"{len(out)} containers on this host; fastdp carries at most {MAX_CONTAINERS}",
                           fix="detach a container first")
    return tuple(out)


def host_port(ifname: str, mac: str, ips: Collection[str]) -> LocalPort:
    """The host's own port: the weave bridge ``ifname`` with its MAC and IPv4 addresses (the
    exposed ones, weaveDNS's), the only ones the host may send from on the weave network
    with fastdp. More than MAX_PORT_IPS: the lowest are kept (``expose`` refuses more)."""
    v4 = set()
    for a in ips:
        try:
            v4.add(ipaddress.IPv4Interface(a).ip)
        except ValueError:
            continue   # IPv6 (the bridge's link-local): the guard checks the MAC alone there
    kept = [str(a) for a in sorted(v4)]
    return LocalPort(ifname, _mac(mac), tuple(kept[:MAX_PORT_IPS]))


@dataclass(frozen=True)
class UnderlayRoute:
    """How the direct path leaves this host toward one next hop (from the host's routes)."""

    ifindex: int        # underlay device
    ifname: str
    src_ip: str         # outer source address (the route's preferred source)
    gw_ip: str          # neighbour to send to: the gateway, or the next hop itself when on-link


def direct_hops(plan: DatapathPlan) -> dict[int, str]:
    """Next hops the direct path may send to: short ID -> underlay IPv4, fastdp mode only.

    Sleeve and unreachable next hops get no underlay entry (their frames never
    reach the encapsulation), so the loader clears theirs.
    """
    return {r.nexthop_short_id: r.nexthop_ip for r in plan.peers.values()
            if r.mode == "fastdp" and r.nexthop_ip != "0.0.0.0"}


@dataclass(frozen=True)
class MacDiff:
    upsert: dict[str, str]    # MAC -> host ifname (local containers)
    delete: list[str]         # MACs to remove


def diff_macs(current: Mapping[str, tuple[int, bool]], plan: DatapathPlan) -> MacDiff:
    """What to change in the MAC table. ``current``: MAC -> (peer short ID, is_local).

    Local entries are exactly the plan's ports; learned entries stay while their
    peer is in the plan (a peer that left takes its MACs with it).
    """
    want = {p.mac: p.ifname for p in plan.ports}
    if plan.host is not None:
        want.setdefault(plan.host.mac, plan.host.ifname)
    delete = []
    for mac, (peer, is_local) in current.items():
        if is_local and mac not in want:
            delete.append(mac)
        elif not is_local and (peer not in plan.peers or peer == plan.local_short_id):
            delete.append(mac)
    return MacDiff(upsert=want, delete=sorted(delete))


def diff_slots(current: set[int], want: set[int]) -> tuple[set[int], set[int]]:
    """(slots to write, slots to clear) for an array indexed by short ID."""
    return want, current - want
