"""Rates from counter deltas, a minute of history, sparklines (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weave_fdp.dashboard.rates import SPARK_BLOCKS, History, compute_rates, counter_rate, sparkline
from weave_fdp.dashboard.snapshot import parse_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def series():
    return [parse_report(r) for r in json.loads((FIXTURES / "report_series.json").read_text())]


@pytest.mark.parametrize(("prev", "cur", "dt", "want"), [
    (100, 300, 2.0, 100.0),
    (5, 5, 1.0, 0.0),
    (300, 100, 1.0, None),   # counter reset: no rate, not a negative one
    (None, 100, 1.0, None),
    (100, None, 1.0, None),
    (100, 200, 0.0, None),
])
def test_counter_rate(prev, cur, dt, want) -> None:
    assert counter_rate(prev, cur, dt) == want


def test_rates_between_recorded_snapshots() -> None:
    a, b = series()[:2]
    r = compute_rates(a, b, 1.0)
    conn = r.connections[("192.0.2.2:6783", "7e:aa:00:00:00:02")]
    assert (conn.tx_bps, conn.rx_bps) == (2_500_000, 1_200_000)
    iperf = next(f for f in b.flows if f.dport == 5201)
    assert r.flows[iperf.key].bps == 2_200_000 and r.flows[iperf.key].pps == 1500
    assert r.peers["7e:aa:00:00:00:03"].tx_bps == 71_800
    assert r.drops["no_route"] == 1 and r.drops["ttl_exceeded"] == 0
    # The retrying connection has no counters: no rate, no crash.
    assert r.connections[("192.0.2.5:6783", None)].tx_bps is None


def test_first_sample_and_new_flows_have_no_rate() -> None:
    raw = json.loads((FIXTURES / "report_series.json").read_text())
    a = parse_report(raw[0])
    assert compute_rates(None, a, None).flows == {}
    raw[1]["datapath"]["flows"].append({"src_ip": "10.32.9.9", "dst_ip": "10.32.9.8", "proto": "udp",
                                        "packets": 5, "bytes": 500})
    b = parse_report(raw[1])
    r = compute_rates(a, b, 1.0)
    new = b.flows[-1].key
    assert new not in r.flows and r.flow_rate(len(b.flows) - 1) is None
    assert len(r.flows) == len(a.flows)


def test_flow_keys_survive_unhashable_garbage() -> None:
    a = parse_report({"datapath": {"flows": [{"src_ip": ["x"], "bytes": 1, "packets": 1}]}})
    b = parse_report({"datapath": {"flows": [{"src_ip": ["x"], "bytes": 11, "packets": 2}]}})
    assert compute_rates(a, b, 2.0).flow_bps == [5.0]
    assert b.flows[0].src_ip is None


def test_peer_rows_per_path_are_summed() -> None:
    a, b = series()[:2]
    for s in (a, b):
        dup = [c for c in s.peer_counters if c.peer == "7e:aa:00:00:00:02"][0]
        s.peer_counters.append(type(dup)(dup.peer, dup.tx_packets, dup.tx_bytes, dup.rx_packets, dup.rx_bytes, "sleeve"))
    assert compute_rates(a, b, 1.0).peers["7e:aa:00:00:00:02"].tx_bps == 2 * 2_200_098


def test_history_keeps_a_minute_and_forgets_silent_peers() -> None:
    snaps = series()
    h = History(seconds=3)
    for i in range(1, len(snaps)):
        h.add(compute_rates(snaps[i - 1], snaps[i], 1.0))
    assert len(h.series("7e:aa:00:00:00:02")) == 3
    assert h.series("7e:aa:00:00:00:02")[-1] == 2_200_098 + 46_000
    from weave_fdp.dashboard.rates import Rates
    for _ in range(3):
        h.add(Rates())
    assert h.peers() == []


def test_sparkline_scales_resamples_and_right_aligns() -> None:
    assert sparkline([0, 5, 10], 3) == SPARK_BLOCKS[0] + SPARK_BLOCKS[4] + SPARK_BLOCKS[-1]
    assert sparkline([1, 2], 5) == "   " + SPARK_BLOCKS[4] + SPARK_BLOCKS[-1]
    assert sparkline([None, 0, 0], 3) == " " + SPARK_BLOCKS[0] * 2
    line = sparkline(list(range(60)), 20)
    assert len(line) == 20 and line[-1] == SPARK_BLOCKS[-1] and line[0] == SPARK_BLOCKS[0]
    # A one-second peak survives the down-sampling.
    assert SPARK_BLOCKS[-1] in sparkline([0] * 30 + [9] + [0] * 29, 10)
    assert sparkline([], 4) == "    " and sparkline([1], 0) == ""
