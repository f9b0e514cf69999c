"""The dashboard's model: snapshots and rates in, keys in, sorted/filtered rows out.

Pure (no terminal, no clock): the live loop, ``--once``, ``--json`` and the
tests all drive this one class.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from weave_fdp.dashboard.rates import FlowRate, History, Rates, compute_rates
from weave_fdp.dashboard.snapshot import CONN_STATES, Connection, Flow, Peer, Snapshot, parse_report

SORTS = ("rate", "bytes", "packets", "recent")


@dataclass
class UiState:
    """What the keys change."""

    sort: str = "rate"
    filter: str = ""
    editing: str | None = None  # filter text being typed after `f`, None when not editing
    paused: bool = False
    quit: bool = False


def _flow_text(f: Flow) -> str:
    return " ".join(
        str(x) for x in (f.src_mac, f.dst_mac, f.src_ip, f.dst_ip, f.proto, f.sport, f.dport, f.path, f.via) if x is not None
    ).lower()


def _conn_text(c: Connection) -> str:
    return " ".join(
        str(x) for x in (c.address, c.peer, c.nickname, c.state, c.mode, c.mode_reason, c.info) if x is not None
    ).lower()


def _peer_text(p: Peer) -> str:
    return " ".join(str(x) for x in (p.name, p.nickname, p.next_hop) if x is not None).lower()


class Dashboard:
    """Holds the latest snapshot, its rates and a minute of history, plus the UI state."""

    def __init__(self, history_s: int = 60) -> None:
        self.snap: Snapshot | None = None
        self.taken_at: float | None = None
        self.rates = Rates()
        self.history = History(history_s)
        self.ui = UiState()
        self.error: str | None = None
        self.samples = 0

    # -- input ------------------------------------------------------------
    def ingest(self, report: Any, now: float) -> Snapshot:
        """Take one report (the API's dict) fetched at monotonic time ``now``."""
        snap = parse_report(report)
        dt = None if self.taken_at is None else now - self.taken_at
        self.rates = compute_rates(self.snap, snap, dt)
        if self.snap is not None:
            self.history.add(self.rates)
        self.snap, self.taken_at = snap, now
        self.error = None
        self.samples += 1
        return snap

    def fail(self, message: str) -> None:
        """The last fetch failed: keep the data, say why in the header."""
        self.error = message

    def key(self, ch: str) -> None:
        """Apply one key press (q quit, s sort, f filter, p pause; Enter/Esc/Backspace while filtering)."""
        ui = self.ui
        if ui.editing is not None:
            if ch in ("\r", "\n"):
                ui.filter, ui.editing = ui.editing.strip(), None
            elif ch == "\x1b":
                ui.editing = None
            elif ch in ("\x7f", "\b"):
                ui.editing = ui.editing[:-1]
            elif ch.isprintable():
                ui.editing += ch
            return
        if ch in ("q", "Q", "\x03"):
            ui.quit = True
        elif ch == "s":
            ui.sort = SORTS[(SORTS.index(ui.sort) + 1) % len(SORTS)]
        elif ch == "f":
            ui.editing = ui.filter
        elif ch == "p":
            ui.paused = not ui.paused
        elif ch == "\x1b":
            ui.filter = ""

    # -- output -----------------------------------------------------------
    @property
    def active_filter(self) -> str:
        ui = self.ui
        return (ui.editing if ui.editing is not None else ui.filter).strip().lower()

    def _rows(self) -> list[int]:
        """Rows of the flow table that match the filter."""
        assert self.snap is not None
        table = self.snap.flow_table
        text = self.active_filter
        if not text:
            return list(range(len(table)))
        return [i for i, f in enumerate(table.all()) if text in _flow_text(f)]

    def flows(self, limit: int | None = None) -> list[tuple[Flow, FlowRate | None]]:
        """Flows matching the filter, best first by the current sort; at most ``limit``.

        Sorts row numbers by plain lists of numbers and builds Flow objects only
        for the rows returned (see FlowTable).
        """
        if self.snap is None:
            return []
        table, rates = self.snap.flow_table, self.rates
        if rates.flow_keys is not table.keys:  # rates of another snapshot (first sample)
            rates = Rates()
        n = len(table)
        rows = self._rows()
        byts = [b if b is not None else 0 for b in table.bytes]
        pkts = [p if p is not None else 0 for p in table.packets]
        sort = self.ui.sort
        if sort == "rate":
            bps = [v if v is not None else -1.0 for v in rates.flow_bps] or [-1.0] * n
            primary = bps
        elif sort == "bytes":
            primary, byts = byts, pkts
        elif sort == "packets":
            primary = pkts
        else:
            primary = table.last_seen()
        top = heapq.nlargest(limit if limit is not None else n, rows, key=lambda i: (primary[i], byts[i]))
        return [(table.flow(i), rates.flow_rate(i)) for i in top]

    def flow_count(self) -> int:
        if self.snap is None:
            return 0
        return len(self._rows()) if self.active_filter else len(self.snap.flow_table)

    def connections(self) -> list[Connection]:
        """Connections matching the filter: established first, then by peer."""
        if self.snap is None:
            return []
        text = self.active_filter
        conns = [c for c in self.snap.connections if not text or text in _conn_text(c)]
        order = {s: i for i, s in enumerate(CONN_STATES)}
        return sorted(conns, key=lambda c: (order.get(c.state or "", 9), c.label, c.address or ""))

    def peers(self) -> list[Peer]:
        """Peers matching the filter: unreachable first (they need attention), this router last."""
        if self.snap is None:
            return []
        text = self.active_filter
        me = self.snap.router.name
        peers = [p for p in self.snap.peers if not text or text in _peer_text(p) or p.name == me]
        return sorted(peers, key=lambda p: (p.reachable is not False, p.name == me, p.label))

    def next_hop(self, p: Peer) -> str | None:
        if p.next_hop is not None:
            return p.next_hop
        return self.snap.unicast.get(p.name or "") if self.snap else None

    def counts(self) -> dict[str, Any]:
        """Header figures: peers, connections by state and mode, flows."""
        snap = self.snap or Snapshot()
        by_state: dict[str, int] = {}
        by_mode: dict[str, int] = {}
        for c in snap.connections:
            by_state[c.state or "unknown"] = by_state.get(c.state or "unknown", 0) + 1
            if c.state == "established":
                by_mode[c.mode or "none"] = by_mode.get(c.mode or "none", 0) + 1
        return {
            "peers": len(snap.peers),
            "unreachable": sum(1 for p in snap.peers if p.reachable is False),
            "connections": len(snap.connections),
            "by_state": by_state,
            "by_mode": by_mode,
            "flows": len(snap.flow_table),
        }

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        """The JSON-lines form of one frame: the snapshot's figures plus rates."""
        from dataclasses import asdict

        snap = self.snap or Snapshot()
        conns = []
        for c in self.connections():
            r = self.rates.connections.get(c.key)
            conns.append({**asdict(c), "tx_rate": r.tx_bps if r else None, "rx_rate": r.rx_bps if r else None})
        peers = []
        for p in self.peers():
            r = self.rates.peers.get(p.name or "")
            peers.append({
                **asdict(p),
                "next_hop": self.next_hop(p),
                "tx_rate": r.tx_bps if r else None,
                "rx_rate": r.rx_bps if r else None,
                "history": self.history.series(p.name or ""),
            })
        flows = [
            {**f.to_dict(), "rate": r.bps if r else None, "pps": r.pps if r else None}
            for f, r in self.flows(limit)
        ]
        return {
            "version": snap.version,
            "router": asdict(snap.router),
            "counts": self.counts(),
            "connections": conns,
            "peers": peers,
            "flows": flows,
            "drops": snap.drops,
            "drop_rates": self.rates.drops,
            "ipam": snap.ipam,
            "dns": snap.dns,
            "interval_s": self.rates.dt,
            "sort": self.ui.sort,
            "filter": self.ui.filter,
            "error": self.error,
            "problems": snap.problems,
        }
