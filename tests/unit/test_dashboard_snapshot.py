"""Parsing the router's report into the dashboard's snapshot: tolerant of anything."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from weave_fdp.dashboard.snapshot import dns_names, parse_report
from weave_fdp.dashboard.state import Dashboard
from weave_fdp.dashboard.view import render_frame, render_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def test_recorded_report_parses_every_section() -> None:
    snap = parse_report(load("report_mesh.json"))
    assert snap.problems == []
    assert snap.router.nickname == "host1" and snap.router.encryption is False
    assert snap.router.overlays == ["fastdp", "sleeve"]
    assert [p.nickname for p in snap.peers] == ["host1", "host2", "host3", "host4", "host5"]
    assert {c.mode for c in snap.connections} == {"fastdp", "sleeve", None}
    assert snap.unicast["7e:aa:00:00:00:04"] == "7e:aa:00:00:00:02"
    assert len(snap.flows) == 6 and snap.flows[0].proto == "tcp" and snap.flows[0].dport == 5201
    assert snap.drops["ttl_exceeded"] == 3
    assert snap.has_ipam and snap.ipam and snap.ipam["range"] == "10.32.0.0/12"
    assert dns_names(snap)["10.32.0.1"] == "web1"


def test_null_sections_mean_not_enabled_missing_mean_unknown() -> None:
    snap = parse_report(load("report_minimal.json"))
    assert snap.has_ipam and snap.ipam is None and snap.has_dns and snap.dns is None
    snap = parse_report({"version": "x"})
    assert not snap.has_ipam and not snap.has_dns and not snap.has_datapath and not snap.has_drops


def test_wrong_types_become_none_and_problems() -> None:
    report = {
        "version": 3,
        "router": {"name": ["x"], "uptime_s": "12.5", "encryption": "yes", "port": "6783", "overlays": "fastdp"},
        "peers": [{"name": "a", "reachable": "maybe", "connections": "none"}, 7, None],
        "connections": {"not": "a list"},
        "routes": {"unicast": {"a": 5, "b": None}, "broadcast": {"a": "b"}},
        "datapath": {"flows": [{"proto": 17, "sport": "53", "packets": 1.5, "bytes": True, "last_seen": "nan"},
                               "junk"],
                     "peers": [{"peer": "a", "tx_bytes": "12"}], "drops": {"x": "7", "y": None, "z": [1]}},
        "ipam": "on",
        "dns": [],
    }
    snap = parse_report(report)
    assert snap.version == "3"
    assert snap.router.name is None and snap.router.uptime_s == 12.5 and snap.router.encryption is True
    assert snap.router.port == 6783 and snap.router.overlays == []
    assert snap.peers[0].reachable is None and snap.peers[0].connections == []
    assert snap.connections == []
    assert snap.unicast == {"a": "5"} and snap.broadcast == {"a": []}
    f = snap.flows[0]
    assert (f.proto, f.sport, f.packets, f.bytes, f.last_seen) == ("udp", 53, 1, None, None)
    assert snap.peer_counters[0].tx_bytes == 12
    assert snap.drops == {"x": 7}
    assert not snap.has_ipam and not snap.has_dns
    text = "\n".join(snap.problems)
    assert "peers: skipped 2" in text and "connections: expected a list" in text
    assert "datapath.flows: skipped 1" in text and "ipam:" in text and "dns:" in text


def test_not_an_object_is_one_problem() -> None:
    for junk in (None, [], "report", 42, 1.5, True):
        snap = parse_report(junk)
        assert snap.peers == [] and len(snap.problems) == 1


def _render_everything(report) -> None:
    dash = Dashboard()
    dash.ingest(report, 0.0)
    dash.ingest(report, 1.0)
    for w, h in ((80, 24), (200, 50), (30, 5)):
        con = Console(width=w, height=h, record=True, color_system=None, file=open("/dev/null", "w"))
        con.print(render_frame(dash, w, h, now=0))
        con.print(render_report(dash, w))
    json.dumps(dash.to_json(5), default=str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=12,
)
KEYS = ["version", "router", "peers", "connections", "routes", "targets", "overlays", "datapath", "ipam", "dns"]
report_like = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=10)


@settings(max_examples=60, deadline=None)
@given(report_like)
def test_garbage_reports_render_without_crashing(report) -> None:
    _render_everything(report)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["src_ip", "dst_ip", "proto", "sport", "dport", "packets",
                                                  "bytes", "path", "via", "last_seen"]), json_values), max_size=5),
       st.lists(st.dictionaries(st.sampled_from(["address", "peer", "state", "mode", "mtu", "rtt_ms",
                                                  "tx_bytes"]), json_values), max_size=4))
def test_garbage_records_inside_a_good_report_render(flows, conns) -> None:
    report = load("report_mesh.json")
    report["datapath"]["flows"] += flows
    report["connections"] += conns
    _render_everything(report)
