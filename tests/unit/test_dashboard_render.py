"""The dashboard rendered from recorded snapshots with rich's recording console.

Checks content a user reads (peers, modes, a flow, drop reasons) and that the
frame fits: exactly the console's height, no line wider than the console.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from weave_fdp.dashboard.state import SORTS, Dashboard
from weave_fdp.dashboard.view import render_frame, render_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def dashboard(name: str = "report_series.json") -> Dashboard:
    doc = json.loads((FIXTURES / name).read_text())
    dash = Dashboard()
    for i, report in enumerate(doc if isinstance(doc, list) else [doc]):
        dash.ingest(report, float(i))
    return dash


def frame(dash: Dashboard, width: int, height: int) -> list[str]:
    con = Console(width=width, height=height, record=True, color_system=None, file=io.StringIO())
    con.print(render_frame(dash, width, height, now=0))
    lines = con.export_text().rstrip("\n").split("\n")
    for line in lines:
        assert cell_len(line) <= width, f"line wider than {width}: {line!r}"
    assert len(lines) <= height
    return lines


def test_80x24_shows_the_essentials_and_fits() -> None:
    lines = frame(dashboard(), 80, 24)
    text = "\n".join(lines)
    assert len(lines) == 24
    assert "host1" in lines[0] and "unencrypted" in lines[0]
    assert "peers 5 (1 unreachable)" in lines[1] and "2 established (fastdp 1, sleeve 1)" in lines[1]
    for want in ("host2", "host3", "fastdp", "sleeve", "retrying", "1450", "0.21ms",
                 "10.32.0.1:43512", "10.40.0.1:5201", "2.2MB/s", "no_route", "unreachable",
                 "range 10.32.0.0/12", "domain weave.local."):
        assert want in text, want
    assert "q" in lines[-1] and "sort:rate" in lines[-1]


def test_200x50_uses_the_space() -> None:
    text = "\n".join(frame(dashboard(), 200, 50))
    for want in ("sleeve (fastdp heartbeats lost 12s ago)", "web1(10.32.0.1):43512", "db1(10.40.0.1):5201",
                 "via host2", "host5", "unreachable", "ttl_exceeded", "unknown_peer", "pending_allocates",
                 "cache(10.48.0.1):53", "pkt/s", "connection refused"):
        assert want in text, want
    # Every peer and every flow has room here.
    assert all(f"host{i}" in text for i in range(1, 6))
    assert "Flows: top 6 of 6 by rate" in text


def test_flows_are_sorted_by_current_rate() -> None:
    dash = dashboard()
    rates = [r.bps for _, r in dash.flows()]
    assert rates == sorted(rates, key=lambda v: -1 if v is None else v, reverse=True)
    assert dash.flows(1)[0][0].dport == 5201


def test_minimal_report_says_not_enabled() -> None:
    text = "\n".join(frame(dashboard("report_minimal.json"), 80, 24))
    assert "lonely" in text and "encrypted" in text
    assert text.count("not enabled") == 2
    assert "drops none" in text and "top 0 of 0" in text


@pytest.mark.parametrize(("w", "h"), [(39, 24), (80, 7), (20, 3), (1, 1), (80, 8), (40, 8), (300, 100)])
def test_any_size_renders_within_bounds(w: int, h: int) -> None:
    lines = frame(dashboard(), w, h)
    if w < 40 or h < 8:
        assert "too small" in "\n".join(lines) or h < 3


def test_report_mode_has_every_panel() -> None:
    con = Console(width=120, record=True, color_system=None, file=io.StringIO())
    con.print(render_report(dashboard(), 120, flows=3))
    text = con.export_text()
    for title in ("Peers and routes (5)", "Connections (3)", "Flows: top 3 of 6", "Drops (4)", "IPAM", "DNS"):
        assert title in text, title


def test_keys_sort_filter_pause_quit() -> None:
    dash = dashboard()
    for expected in SORTS[1:] + SORTS[:1]:
        dash.key("s")
        assert dash.ui.sort == expected
    dash.key("s")
    assert dash.flows(1)[0][0].bytes == max(f.bytes for f in dash.snap.flows)
    for ch in "fudp\x7fp":
        dash.key(ch)
    assert dash.ui.editing == "udp" and dash.ui.filter == ""
    assert [f.proto for f, _ in dash.flows()] == ["udp"]  # filters live while typing
    dash.key("\r")
    assert dash.ui.filter == "udp" and dash.ui.editing is None and dash.flow_count() == 1
    text = "\n".join(frame(dash, 80, 24))
    assert "matching 'udp'" in text and "filter:udp" in text
    dash.key("\x1b")
    assert dash.ui.filter == "" and dash.flow_count() == 6
    dash.key("p")
    assert dash.ui.paused and "PAUSED" in frame(dash, 80, 24)[-1]
    dash.key("q")
    assert dash.ui.quit


def test_router_error_is_shown_and_data_kept() -> None:
    dash = dashboard()
    dash.fail("no router is running in this network namespace")
    text = "\n".join(frame(dash, 120, 30))
    assert "router: no router is running" in text and "host2" in text


def test_json_frame_has_rates_and_history() -> None:
    out = dashboard().to_json(2)
    json.dumps(out)
    assert len(out["flows"]) == 2 and out["flows"][0]["rate"] == 2_200_000
    host2 = next(p for p in out["peers"] if p["nickname"] == "host2")
    assert host2["history"] == [2_246_098] * 4 and host2["next_hop"] == host2["name"]
    assert out["counts"]["by_mode"] == {"fastdp": 1, "sleeve": 1}


def test_report_recorded_from_a_real_router_renders() -> None:
    """tests/fixtures/report_lab_h2.json: `weave-fdp report` of h2 in a line lab h1-h2-h3 (fastdp)."""
    dash = dashboard("report_lab_h2.json")
    assert dash.snap is not None and dash.snap.problems == []
    for w, h in ((80, 24), (200, 50)):
        text = "\n".join(frame(dash, w, h))
        assert "h1" in text and "h3" in text and "fastdp" in text and "established" in text
        assert "not enabled" in text
