"""Typed, tolerant view of the router's ``report`` dict.

The dashboard reads only what ``weave-fdp report --json`` returns. Routers of
other versions, half-started routers and plain garbage must all render, so every
field is optional here: a missing or malformed value becomes ``None`` (shown as
"n/a") and a note in ``Snapshot.problems``; parsing never raises.

Flows are the hot path (10,000 of them once a second), so ``_flow`` checks the
common types inline before falling back to the slower coercions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
CONN_STATES = ("established", "pending", "retrying", "failed")

FlowKey = tuple[Any, ...]
FLOW_FIELDS = ("src_mac", "dst_mac", "src_ip", "dst_ip", "proto", "sport", "dport", "packets", "bytes",
               "last_seen", "path", "via")


def _str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _int(v: Any) -> int | None:
    if type(v) is int:
        return v
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, float):
        return int(v) if v == v and abs(v) != float("inf") else None
    if isinstance(v, str):
        try:
            return int(v.strip(), 0)
        except ValueError:
            return None
    return None


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if f == f and abs(f) != float("inf") else None
    if isinstance(v, str):
        try:
            return _float(float(v))
        except ValueError:
            return None
    return None


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "on", "off"):
        return v.lower() in ("true", "yes", "on")
    return None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _proto(v: Any) -> str | None:
    if isinstance(v, str):
        return v.lower()
    n = _int(v)
    if n is None:
        return None
    return PROTO_NAMES.get(n, str(n))


@dataclass(slots=True)
class RouterInfo:
    """This host's router: identity, uptime and settings."""

    name: str | None = None
    nickname: str | None = None
    short_id: int | None = None
    uid: str | None = None
    uptime_s: float | None = None
    encryption: bool | None = None
    port: int | None = None
    trusted_subnets: list[str] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PeerLink:
    """One connection of a peer as gossiped in the topology."""

    name: str | None
    address: str | None
    outbound: bool | None
    established: bool | None


@dataclass(slots=True)
class Peer:
    """A peer of the mesh (this one included) and this router's route to it."""

    name: str | None
    nickname: str | None
    short_id: int | None
    uid: str | None
    version: int | None
    reachable: bool | None
    next_hop: str | None
    connections: list[PeerLink]

    @property
    def label(self) -> str:
        return self.nickname or self.name or "n/a"


@dataclass(slots=True)
class Connection:
    """One of this router's connections (to a peer or an address it tries)."""

    address: str | None
    peer: str | None
    nickname: str | None
    outbound: bool | None
    state: str | None
    info: str | None
    mode: str | None
    mode_reason: str | None
    mtu: int | None
    rtt_ms: float | None
    tx_bytes: int | None
    rx_bytes: int | None
    retry_at: Any

    @property
    def key(self) -> tuple[str | None, str | None]:
        return (self.address, self.peer)

    @property
    def label(self) -> str:
        return self.nickname or self.peer or "n/a"


@dataclass(slots=True)
class Flow:
    """One datapath flow: MACs plus the L3/L4 5-tuple where present.

    ``key`` identifies the flow across snapshots; it is computed once at parse time
    because rates, sorting and filtering all use it, 10,000 times a second.
    """

    src_mac: str | None
    dst_mac: str | None
    src_ip: str | None
    dst_ip: str | None
    proto: str | None
    sport: int | None
    dport: int | None
    packets: int | None
    bytes: int | None
    last_seen: float | None
    path: str | None
    via: str | None
    key: FlowKey = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.key:
            self.key = (self.src_mac, self.dst_mac, self.src_ip, self.dst_ip, self.proto, self.sport, self.dport)

    def to_dict(self) -> dict[str, Any]:
        """The report's fields (normalized), without the internal key."""
        return {name: getattr(self, name) for name in FLOW_FIELDS}


@dataclass(slots=True)
class PeerCounters:
    """Datapath counters of traffic to and from one peer."""

    peer: str | None
    tx_packets: int | None
    tx_bytes: int | None
    rx_packets: int | None
    rx_bytes: int | None
    path: str | None = None


@dataclass(slots=True)
class Snapshot:
    """Everything the dashboard shows, as of one ``report`` call."""

    version: str | None = None
    router: RouterInfo = field(default_factory=RouterInfo)
    peers: list[Peer] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    unicast: dict[str, str] = field(default_factory=dict)
    broadcast: dict[str, list[str]] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    overlays: dict[str, Any] = field(default_factory=dict)
    flow_table: FlowTable = field(default_factory=lambda: FlowTable([]))
    peer_counters: list[PeerCounters] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    # None = the router says "not enabled" (null); missing sections are tracked below.
    ipam: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    has_datapath: bool = False
    has_drops: bool = False
    has_ipam: bool = False
    has_dns: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def flows(self) -> list[Flow]:
        """Every flow as a typed Flow (builds them all: prefer ``flow_table`` on hot paths)."""
        return self.flow_table.all()

    def peer_label(self, name: str | None) -> str:
        """Nickname of a peer when known, else its name, else "n/a"."""
        if name is None:
            return "n/a"
        for p in self.peers:
            if p.name == name:
                return p.nickname or name
        return name


def _router(d: Any) -> RouterInfo:
    r = _dict(d)
    return RouterInfo(
        name=_str(r.get("name")),
        nickname=_str(r.get("nickname")),
        short_id=_int(r.get("short_id")),
        uid=_str(r.get("uid")),
        uptime_s=_float(r.get("uptime_s")),
        encryption=_bool(r.get("encryption")),
        port=_int(r.get("port")),
        trusted_subnets=[s for s in map(_str, _list(r.get("trusted_subnets"))) if s],
        overlays=[s for s in map(_str, _list(r.get("overlays"))) if s],
    )


def _peer(d: dict[str, Any]) -> Peer:
    links = [
        PeerLink(
            name=_str(c.get("name")),
            address=_str(c.get("address")),
            outbound=_bool(c.get("outbound")),
            established=_bool(c.get("established")),
        )
        for c in _list(d.get("connections"))
        if isinstance(c, dict)
    ]
    return Peer(
        name=_str(d.get("name")),
        nickname=_str(d.get("nickname")),
        short_id=_int(d.get("short_id")),
        uid=_str(d.get("uid")),
        version=_int(d.get("version")),
        reachable=_bool(d.get("reachable")),
        next_hop=_str(d.get("next_hop")),
        connections=links,
    )


def _connection(d: dict[str, Any]) -> Connection:
    state = _str(d.get("state"))
    mode = _str(d.get("mode"))
    return Connection(
        address=_str(d.get("address")),
        peer=_str(d.get("peer")),
        nickname=_str(d.get("nickname")),
        outbound=_bool(d.get("outbound")),
        state=state.lower() if state else None,
        info=_str(d.get("info")),
        mode=mode.lower() if mode else None,
        mode_reason=_str(d.get("mode_reason")),
        mtu=_int(d.get("mtu")),
        rtt_ms=_float(d.get("rtt_ms")),
        tx_bytes=_int(d.get("tx_bytes")),
        rx_bytes=_int(d.get("rx_bytes")),
        retry_at=d.get("retry_at"),
    )


def _flow(d: dict[str, Any]) -> Flow:
    # Hot path: accept the expected types directly, coerce only the odd ones.
    g = d.get
    sm, dm, si, di = g("src_mac"), g("dst_mac"), g("src_ip"), g("dst_ip")
    pr, sp, dp = g("proto"), g("sport"), g("dport")
    pk, by, ls = g("packets"), g("bytes"), g("last_seen")
    pa, via = g("path"), g("via")
    if type(sm) is not str:
        sm = _str(sm)
    if type(dm) is not str:
        dm = _str(dm)
    if type(si) is not str:
        si = _str(si)
    if type(di) is not str:
        di = _str(di)
    if type(pr) is not str or not pr.islower():
        pr = _proto(pr)
    if type(sp) is not int:
        sp = _int(sp)
    if type(dp) is not int:
        dp = _int(dp)
    if type(pk) is not int:
        pk = _int(pk)
    if type(by) is not int:
        by = _int(by)
    if type(ls) is not float:
        ls = _float(ls)
    if type(pa) is not str:
        pa = _str(pa)
    if type(via) is not str:
        via = _str(via)
    return Flow(sm, dm, si, di, pr, sp, dp, pk, by, ls, pa, via, (sm, dm, si, di, pr, sp, dp))


_HASHABLE = (str, int, float, bool, type(None))


class FlowTable:
    """The report's flows, column-wise: keys and counters for all, Flow objects on demand.

    A frame shows twenty flows out of maybe 10,000, but rates and sorting need
    every flow's key and counters each second. Reading just those (and building a
    Flow only for rows someone looks at) is what keeps ``top`` under a few percent
    of a core; see ``python -m weave_fdp.bench.dashboard``.
    """

    __slots__ = ("_raw", "keys", "bytes", "packets", "_flows", "_all", "_index")

    def __init__(self, raw: list[dict[str, Any]]) -> None:
        self._raw = raw
        keys: list[FlowKey] = []
        byts: list[int | None] = []
        pkts: list[int | None] = []
        for d in raw:
            g = d.get
            k = (g("src_mac"), g("dst_mac"), g("src_ip"), g("dst_ip"), g("proto"), g("sport"), g("dport"))
            try:
                hash(k)
            except TypeError:  # a list or object where a scalar belongs: key on its text
                k = tuple(v if isinstance(v, _HASHABLE) else repr(v) for v in k)
            keys.append(k)
            b, p = g("bytes"), g("packets")
            byts.append(b if type(b) is int else _int(b))
            pkts.append(p if type(p) is int else _int(p))
        self.keys, self.bytes, self.packets = keys, byts, pkts
        self._flows: dict[int, Flow] = {}
        self._all: list[Flow] | None = None
        self._index: dict[FlowKey, int] | None = None

    def __len__(self) -> int:
        return len(self._raw)

    def flow(self, i: int) -> Flow:
        """Row ``i`` as a typed Flow (built once)."""
        f = self._flows.get(i)
        if f is None:
            f = _flow(self._raw[i])
            f.key = self.keys[i]
            self._flows[i] = f
        return f

    def all(self) -> list[Flow]:
        if self._all is None:
            self._all = [self.flow(i) for i in range(len(self._raw))]
        return self._all

    def index(self) -> dict[FlowKey, int]:
        """Key -> row (the last row wins if the datapath ever repeats a key)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        return self._index

    def last_seen(self) -> list[float]:
        out = []
        for d in self._raw:
            v = d.get("last_seen")
            v = v if type(v) is float else _float(v)
            out.append(v if v is not None else 0.0)
        return out


def _peer_counters(d: dict[str, Any]) -> PeerCounters:
    return PeerCounters(
        peer=_str(d.get("peer")),
        tx_packets=_int(d.get("tx_packets")),
        tx_bytes=_int(d.get("tx_bytes")),
        rx_packets=_int(d.get("rx_packets")),
        rx_bytes=_int(d.get("rx_bytes")),
        path=_str(d.get("path")),
    )


def _records(items: Any, build: Any, what: str, problems: list[str]) -> list[Any]:
    """Build one record per dict in ``items``; count what had to be skipped."""
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append(f"{what}: expected a list, got {type(items).__name__}")
        return []
    out = []
    bad = 0
    for it in items:
        if isinstance(it, dict):
            out.append(build(it))
        else:
            bad += 1
    if bad:
        problems.append(f"{what}: skipped {bad} malformed entries")
    return out


def parse_report(report: Any) -> Snapshot:
    """Turn a ``report`` result (any JSON value) into a Snapshot; never raises."""
    snap = Snapshot()
    if not isinstance(report, dict):
        snap.problems.append(f"report: expected an object, got {type(report).__name__}")
        return snap
    p = snap.problems
    snap.version = _str(report.get("version"))
    snap.router = _router(report.get("router"))
    snap.peers = _records(report.get("peers"), _peer, "peers", p)
    snap.connections = _records(report.get("connections"), _connection, "connections", p)
    routes = _dict(report.get("routes"))
    snap.unicast = {
        str(k): s for k, v in _dict(routes.get("unicast")).items() if (s := _str(v)) is not None
    }
    snap.broadcast = {
        str(k): [s for s in map(_str, _list(v)) if s] for k, v in _dict(routes.get("broadcast")).items()
    }
    snap.targets = [s for s in map(_str, _list(report.get("targets"))) if s]
    snap.overlays = _dict(report.get("overlays"))
    dp = report.get("datapath")
    if isinstance(dp, dict):
        snap.has_datapath = True
        snap.flow_table = FlowTable(_records(dp.get("flows"), lambda d: d, "datapath.flows", p))
        snap.peer_counters = _records(dp.get("peers"), _peer_counters, "datapath.peers", p)
        snap.has_drops = isinstance(dp.get("drops"), dict)
        snap.drops = {
            str(k): n for k, v in _dict(dp.get("drops")).items() if (n := _int(v)) is not None
        }
    for section in ("ipam", "dns"):
        if section in report:
            value = report[section]
            setattr(snap, f"has_{section}", True)
            if isinstance(value, dict):
                setattr(snap, section, value)
            elif value is not None:
                p.append(f"{section}: expected an object or null, got {type(value).__name__}")
                setattr(snap, f"has_{section}", False)
    return snap


def dns_names(snap: Snapshot) -> dict[str, str]:
    """IP -> container name from the DNS section, whatever list it keeps them in."""
    names: dict[str, str] = {}
    dns = snap.dns or {}
    for key in ("entries", "records", "names"):
        for e in _list(dns.get(key)):
            if not isinstance(e, dict):
                continue
            ip = _str(e.get("address") or e.get("ip"))
            name = _str(e.get("hostname") or e.get("name"))
            if ip and name:
                names.setdefault(ip, name.split(".")[0] or name)
    return names
