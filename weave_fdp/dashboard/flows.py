"""The flow table as one list or a stream (``weave-fdp flows``), from the router's report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from weave_fdp.dashboard.fmt import fmt_bytes, fmt_count, fmt_endpoint, fmt_rate
from weave_fdp.dashboard.rates import FlowRate, compute_rates
from weave_fdp.dashboard.snapshot import Flow, Snapshot, parse_report
from weave_fdp.dashboard.source import ReportSource
from weave_fdp.errors import FdpError, NotFound


def resolve_peer(snap: Snapshot, wanted: str) -> set[str]:
    """Peer names that ``wanted`` (a name, nickname or short id) designates."""
    w = wanted.lower()
    names = {p.name for p in snap.peers if p.name and w in (p.name.lower(), (p.nickname or "").lower(),
                                                              str(p.short_id))}
    if not names:
        known = ", ".join(sorted(p.label for p in snap.peers)) or "none"
        raise NotFound(f"peer {wanted!r} is not in this router's topology (known: {known})",
                       fix="pass a peer name, nickname or short id from `weave-fdp status peers`")
    return names


def select_flows(snap: Snapshot, peers: set[str] | None, proto: str | None) -> list[Flow]:
    return [f for f in snap.flows
            if (peers is None or f.via in peers) and (proto is None or f.proto == proto)]


def flow_record(f: Flow, snap: Snapshot, rate: FlowRate | None = None,
                prev: Flow | None = None) -> dict[str, Any]:
    """One flow as JSON: the report's fields, the via peer's nickname, rates and deltas when known."""
    rec = f.to_dict()
    rec["via_nickname"] = snap.peer_label(f.via) if f.via else None
    if rate is not None:
        rec["rate"], rec["pps"] = rate.bps, rate.pps
    if prev is not None and f.packets is not None and prev.packets is not None:
        rec["delta_packets"] = f.packets - prev.packets
        rec["delta_bytes"] = (f.bytes or 0) - (prev.bytes or 0)
    return rec


def flow_line(rec: dict[str, Any]) -> str:
    """One flow on one line, for ``flows --follow`` without --json."""
    src = fmt_endpoint(rec["src_ip"], rec["sport"], mac=rec["src_mac"])
    dst = fmt_endpoint(rec["dst_ip"], rec["dport"], mac=rec["dst_mac"])
    parts = [time.strftime("%H:%M:%S", time.localtime(rec.get("time"))), rec["proto"] or "n/a",
             f"{src} -> {dst}", f"{fmt_count(rec['packets'])} pkts", fmt_bytes(rec["bytes"])]
    if "delta_packets" in rec:
        parts.append(f"+{fmt_count(rec['delta_packets'])} pkts +{fmt_bytes(rec['delta_bytes'])}")
    if rec.get("rate") is not None:
        parts.append(fmt_rate(rec["rate"]))
    parts.append(f"{rec['path'] or 'n/a'} via {rec['via_nickname'] or 'n/a'}")
    return "  ".join(parts)


def iter_flow_batches(source: ReportSource, *, follow: bool, interval: float, peer: str | None,
                      proto: str | None, count: int | None = None) -> Iterator[tuple[Snapshot, list[dict[str, Any]]]]:
    """Batches of flow records: first every matching flow, then (``follow``) the ones that moved.

    A flow "moved" when it is new or its packet counter changed since the last sample.
    """
    prev: Snapshot | None = None
    prev_at = 0.0
    n = 0
    while True:
        try:
            snap = parse_report(source.fetch())
        except FdpError:
            if prev is None or not follow:
                raise
            time.sleep(interval)
            continue
        now = time.monotonic()
        wall = time.time()
        peers = resolve_peer(snap, peer) if peer else None
        chosen = select_flows(snap, peers, proto)
        if prev is None:
            batch = [{**flow_record(f, snap), "time": wall} for f in chosen]
            batch.sort(key=lambda r: -(r["bytes"] or 0))
        else:
            rates = compute_rates(prev, snap, now - prev_at)
            before = {f.key: f for f in prev.flows}
            batch = []
            for f in chosen:
                old = before.get(f.key)
                if old is not None and old.packets == f.packets:
                    continue
                batch.append({**flow_record(f, snap, rates.flows.get(f.key), old), "time": wall})
            batch.sort(key=lambda r: -(r.get("rate") or 0))
        yield snap, batch
        n += 1
        if not follow or (count is not None and n >= count):
            return
        prev, prev_at = snap, now
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
