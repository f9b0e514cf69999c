"""Per-flow and per-peer counters of the sleeve, in the shape of the fastdp counters.

Convention (same as fastdp's tc programs, which count ``skb->len`` at the container
veth): one packet per frame the sleeve carries and its Ethernet length (header
included, no vnet header); a GSO super-frame counts as one packet of its full
length, as the kernel's skb would. Sent frames are counted when queued toward a
peer (not when refused with ICMP or dropped), received frames when delivered to
the bridge; relayed frames are not flows of this host.

Cheap per frame: the key is the raw bytes of MACs, ethertype and the IPv4
5-tuple sliced from the frame (no decoding); keys are decoded to dicts only when
a report asks. Each table has exactly one writer thread (capture or receive), which
also ages it (``maybe_age``), so counts are exact without locks; readers copy.
Bounded: idle flows age out, and past ``max_flows`` the least recently seen go.
"""

from __future__ import annotations

import time
from typing import Any

IPV4 = b"\x08\x00"
NO_PORTS = bytes(4)
FLOW_IDLE = 120.0        # s without a frame before a flow is forgotten
MAX_FLOWS = 10000
AGE_EVERY = 1.0          # s between aging passes


def flow_key(data: bytes | memoryview, off: int) -> bytes:
    """Raw key of the Ethernet frame at ``data[off:]``:
    dst(6) src(6) ethertype(2) [proto(1) src ip(4) dst ip(4) sport(2) dport(2)] (IPv4 only).

    Ports are zero for non-TCP/UDP and for non-first fragments, so ICMP echo
    requests of one ping share a flow.
    """
    h = bytes(data[off:off + 80])
    if h[12:14] != IPV4 or len(h) < 34:
        return h[:14]
    ihl = (h[14] & 15) * 4
    l4 = 14 + ihl
    if h[23] in (6, 17) and not (h[20] & 0x1F or h[21]) and len(h) >= l4 + 4 and ihl >= 20:
        return h[:14] + h[23:24] + h[26:34] + h[l4:l4 + 4]
    return h[:14] + h[23:24] + h[26:34] + NO_PORTS


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def decode_key(k: bytes) -> dict[str, Any]:
    """The report's fields of a raw key (the fastdp flow dict's names and types)."""
    ethertype = int.from_bytes(k[12:14], "big")
    out: dict[str, Any] = {"src_mac": _mac(k[6:12]), "dst_mac": _mac(k[0:6]), "src_ip": None, "dst_ip": None,
                           "proto": None, "sport": None, "dport": None, "ethertype": ethertype}
    if len(k) > 14:
        out.update(proto=k[14], src_ip=".".join(map(str, k[15:19])), dst_ip=".".join(map(str, k[19:23])),
                   sport=int.from_bytes(k[23:25], "big") or None, dport=int.from_bytes(k[25:27], "big") or None)
    return out


class FlowTable:
    """Flows of one direction; ``add`` is called by one thread only."""

    def __init__(self, max_flows: int = MAX_FLOWS, idle: float = FLOW_IDLE) -> None:
        self.max_flows = max_flows
        self.idle = idle
        self.t: dict[bytes, list] = {}     # key -> [packets, bytes, last_seen (monotonic), via peer]
        self.evicted = 0
        self._next_age = 0.0

    def add(self, data: bytes | memoryview, off: int, nbytes: int, now: float, via: bytes) -> None:
        self.add_key(flow_key(data, off), nbytes, now, via)

    def add_key(self, k: bytes, nbytes: int, now: float, via: bytes) -> None:
        """``add`` with the key taken before: the transmit side seals frames in place,
        so their key must be sliced while they are still plaintext."""
        e = self.t.get(k)
        if e is None:
            if len(self.t) >= 2 * self.max_flows:   # a burst of new flows between aging passes
                self._evict(now)
            self.t[k] = [1, nbytes, now, via]
        else:
            e[0] += 1
            e[1] += nbytes
            e[2] = now
            e[3] = via

    def maybe_age(self, now: float) -> None:
        """Forget idle flows and trim to ``max_flows`` (owner thread, at most once a second)."""
        if now < self._next_age:
            return
        self._next_age = now + AGE_EVERY
        self._evict(now)

    def _evict(self, now: float) -> None:
        old = [k for k, e in self.t.items() if now - e[2] > self.idle]
        for k in old:
            del self.t[k]
        self.evicted += len(old)
        extra = len(self.t) - self.max_flows
        if extra > 0:
            for k, _ in sorted(self.t.items(), key=lambda kv: kv[1][2])[:extra]:
                del self.t[k]
            self.evicted += extra

    def __len__(self) -> int:
        return len(self.t)

    def snapshot(self, direction: str, name_of: Any, now: float | None = None) -> list[dict[str, Any]]:
        """Flow dicts (fastdp's fields plus ``dir``); ``name_of(6 bytes) -> peer name``."""
        mono = time.monotonic() if now is None else now
        wall = time.time()
        out = []
        for k, (packets, nbytes, last, via) in list(self.t.items()):
            age = max(0.0, mono - last)
            d = decode_key(k)
            d.update(packets=packets, bytes=nbytes, last_seen=round(wall - age, 3), age_s=round(age, 3),
                     path="sleeve", via=name_of(via), dir=direction)
            out.append(d)
        return out


class PeerCounters:
    """Frames and frame bytes per peer (one writer thread)."""

    def __init__(self) -> None:
        self.t: dict[bytes, list[int]] = {}

    def add(self, peer: bytes, nbytes: int) -> None:
        e = self.t.get(peer)
        if e is None:
            self.t[peer] = [1, nbytes]
        else:
            e[0] += 1
            e[1] += nbytes

    def snapshot(self) -> dict[bytes, tuple[int, int]]:
        return {p: (e[0], e[1]) for p, e in list(self.t.items())}


def peer_rows(tx: PeerCounters, rx: PeerCounters, name_of: Any) -> list[dict[str, Any]]:
    """The report's ``datapath.peers`` rows for the sleeve (``path`` = "sleeve")."""
    t, r = tx.snapshot(), rx.snapshot()
    rows = []
    for p in sorted(set(t) | set(r)):
        tp, tb = t.get(p, (0, 0))
        rp, rb = r.get(p, (0, 0))
        rows.append({"peer": name_of(p), "tx_packets": tp, "tx_bytes": tb, "rx_packets": rp, "rx_bytes": rb,
                     "path": "sleeve"})
    return rows


SLEEVE_PREFIX = "sleeve-"    # the sleeve's drop reasons in the merged report


def merge_datapath(base: dict[str, Any] | None, sleeve: dict[str, Any]) -> dict[str, Any]:
    """``report["datapath"]`` of fastdp (``base``, may be None) with the sleeve's added.

    Flows: concatenated; a fastdp row with path "sleeve" (its tc program counts
    frames it leaves to the sleeve) is dropped when the sleeve has the same flow,
    so a frame is counted once. Peers: rows appended (they carry ``path``). Drops:
    the sleeve's reasons are prefixed "sleeve-" (``drops.SleeveDrop``: "sleeve-replay").
    Other keys of ``base`` are kept.
    """
    out = dict(base or {})
    sflows = sleeve.get("flows", [])
    keys = {_flow_identity(f) for f in sflows}
    out["flows"] = [f for f in out.get("flows", []) or []
                    if not (f.get("path") == "sleeve" and _flow_identity(f) in keys)] + sflows
    out["peers"] = list(out.get("peers", []) or []) + sleeve.get("peers", [])
    drops = dict(out.get("drops", {}) or {})
    for cause, n in sleeve.get("drops", {}).items():
        key = f"{SLEEVE_PREFIX}{cause}"
        drops[key] = drops.get(key, 0) + n
    out["drops"] = drops
    return out


def _flow_identity(f: dict[str, Any]) -> tuple:
    return tuple(f.get(k) for k in ("src_mac", "dst_mac", "src_ip", "dst_ip", "proto", "sport", "dport"))
