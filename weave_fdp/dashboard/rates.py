"""Rates from deltas between consecutive snapshots, a minute of history, sparklines.

Pure: no clocks, no I/O. The caller passes the time each snapshot was taken.
A counter that goes down (router restarted, flow expired and re-created) gives
no rate for that interval rather than a negative or huge one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from weave_fdp.dashboard.snapshot import FlowKey, Snapshot

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY_S = 60


def counter_rate(prev: int | None, cur: int | None, dt: float) -> float | None:
    """Per-second rate of a monotonic counter, or None when it cannot be known."""
    if prev is None or cur is None or dt <= 0:
        return None
    delta = cur - prev
    if delta < 0:
        return None
    return delta / dt


@dataclass(slots=True)
class FlowRate:
    bps: float | None  # bytes per second
    pps: float | None


@dataclass(slots=True)
class PeerRate:
    tx_bps: float | None
    rx_bps: float | None

    @property
    def total(self) -> float | None:
        if self.tx_bps is None and self.rx_bps is None:
            return None
        return (self.tx_bps or 0.0) + (self.rx_bps or 0.0)


@dataclass(slots=True)
class Rates:
    """Rates of one interval, keyed like the snapshot's records.

    Flow rates are lists aligned with the current snapshot's ``flow_table`` rows
    (None where unknown): one float per flow is all sorting needs.
    """

    dt: float | None = None
    connections: dict[tuple[str | None, str | None], PeerRate] = field(default_factory=dict)
    flow_keys: list[FlowKey] = field(default_factory=list)
    flow_bps: list[float | None] = field(default_factory=list)
    flow_pps: list[float | None] = field(default_factory=list)
    peers: dict[str, PeerRate] = field(default_factory=dict)
    drops: dict[str, float | None] = field(default_factory=dict)

    def flow_rate(self, row: int) -> FlowRate | None:
        if row >= len(self.flow_bps):
            return None
        bps, pps = self.flow_bps[row], self.flow_pps[row]
        return None if bps is None and pps is None else FlowRate(bps, pps)

    @property
    def flows(self) -> dict[FlowKey, FlowRate]:
        """Key -> rate of every flow that has one (builds a dict: not for hot paths)."""
        out = {}
        for i, k in enumerate(self.flow_keys):
            r = self.flow_rate(i)
            if r is not None:
                out[k] = r
        return out


def _peer_totals(snap: Snapshot) -> dict[str, tuple[int | None, int | None]]:
    """tx/rx bytes per peer, summed over paths (a peer may have a row per path)."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for c in snap.peer_counters:
        if c.peer is None:
            continue
        tx, rx = out.get(c.peer, (None, None))
        if c.tx_bytes is not None:
            tx = (tx or 0) + c.tx_bytes
        if c.rx_bytes is not None:
            rx = (rx or 0) + c.rx_bytes
        out[c.peer] = (tx, rx)
    return out


def compute_rates(prev: Snapshot | None, cur: Snapshot, dt: float | None) -> Rates:
    """Rates between ``prev`` and ``cur`` taken ``dt`` seconds apart (None: first sample)."""
    rates = Rates(dt=dt)
    if prev is None or dt is None or dt <= 0:
        return rates
    prev_conns = {c.key: c for c in prev.connections}
    for c in cur.connections:
        p = prev_conns.get(c.key)
        if p is not None:
            rates.connections[c.key] = PeerRate(
                counter_rate(p.tx_bytes, c.tx_bytes, dt), counter_rate(p.rx_bytes, c.rx_bytes, dt)
            )
    _flow_rates(prev, cur, dt, rates)
    prev_peers = _peer_totals(prev)
    for peer, (tx, rx) in _peer_totals(cur).items():
        ptx, prx = prev_peers.get(peer, (None, None))
        rates.peers[peer] = PeerRate(counter_rate(ptx, tx, dt), counter_rate(prx, rx, dt))
    for reason, n in cur.drops.items():
        rates.drops[reason] = counter_rate(prev.drops.get(reason), n, dt)
    return rates


def _flow_rates(prev: Snapshot, cur: Snapshot, dt: float, rates: Rates) -> None:
    """Per-row byte and packet rates of ``cur``'s flows (the hot loop: 10,000 rows a second)."""
    pt, ct = prev.flow_table, cur.flow_table
    where = pt.index().get
    pb, pp = pt.bytes, pt.packets
    bps: list[float | None] = []
    pps: list[float | None] = []
    for k, b, p in zip(ct.keys, ct.bytes, ct.packets):
        j = where(k)
        if j is None:
            bps.append(None)
            pps.append(None)
            continue
        ob, op = pb[j], pp[j]
        bps.append((b - ob) / dt if b is not None and ob is not None and b >= ob else None)
        pps.append((p - op) / dt if p is not None and op is not None and p >= op else None)
    rates.flow_keys, rates.flow_bps, rates.flow_pps = ct.keys, bps, pps


class History:
    """The last ``seconds`` of per-peer throughput (bytes/s, tx+rx), one sample per update."""

    def __init__(self, seconds: int = HISTORY_S) -> None:
        self.seconds = seconds
        self._series: dict[str, deque[float | None]] = {}

    def add(self, rates: Rates) -> None:
        seen = set()
        for peer, r in rates.peers.items():
            self._series.setdefault(peer, deque(maxlen=self.seconds)).append(r.total)
            seen.add(peer)
        for peer, series in self._series.items():
            if peer not in seen:
                series.append(None)
        # Forget peers that have been silent for the whole window.
        for peer in [p for p, s in self._series.items() if all(v is None for v in s)]:
            del self._series[peer]

    def series(self, peer: str) -> list[float | None]:
        return list(self._series.get(peer, ()))

    def peers(self) -> list[str]:
        return list(self._series)


def _bucket(values: Sequence[float | None], width: int) -> list[float | None]:
    """Resample to ``width`` points: the maximum of each bucket (peaks stay visible)."""
    n = len(values)
    if n <= width:
        return list(values)
    out: list[float | None] = []
    for i in range(width):
        chunk = [v for v in values[i * n // width : (i + 1) * n // width] if v is not None]
        out.append(max(chunk) if chunk else None)
    return out


def sparkline(values: Iterable[float | None], width: int, top: float | None = None) -> str:
    """A text sparkline of at most ``width`` cells, right-aligned (newest at the right).

    Unknown samples are blanks; zero is the lowest block; ``top`` fixes the scale
    (default: the largest value shown).
    """
    if width <= 0:
        return ""
    pts = _bucket(list(values), width)
    known = [v for v in pts if v is not None]
    peak = top if top is not None else (max(known) if known else 0.0)
    cells = []
    for v in pts:
        if v is None:
            cells.append(" ")
        elif peak <= 0:
            cells.append(SPARK_BLOCKS[0])
        else:
            idx = int(round(min(v, peak) / peak * (len(SPARK_BLOCKS) - 1)))
            cells.append(SPARK_BLOCKS[idx])
    return "".join(cells).rjust(width)
