"""Prometheus exposition of a report, parsed back with prometheus_client's text parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from weave_fdp.errors import UsageError
from weave_fdp.router.metrics import make_registry, parse_addr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def scrape(get_report) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value}, from the text a scraper would read."""
    text = generate_latest(make_registry(get_report)).decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_recorded_report_exposes_every_family() -> None:
    report = json.loads((FIXTURES / "report_mesh.json").read_text())
    m = scrape(lambda: report)
    assert m["weave_fdp_up"][()] == 1
    assert m["weave_fdp_peers"] == {(("reachable", "true"),): 4, (("reachable", "false"),): 1}
    conns = m["weave_fdp_connections"]
    assert conns[(("mode", "fastdp"), ("state", "established"))] == 1
    assert conns[(("mode", "sleeve"), ("state", "established"))] == 1
    assert conns[(("mode", "none"), ("state", "retrying"))] == 1
    assert conns[(("mode", "none"), ("state", "failed"))] == 0
    assert m["weave_fdp_flows"] == {(("path", "fastdp"),): 4, (("path", "sleeve"),): 2}
    host2 = (("nickname", "host2"), ("path", "fastdp"), ("peer", "7e:aa:00:00:00:02"))
    assert m["weave_fdp_peer_tx_bytes_total"][host2] == 10_000 + 2_200_098 * 10
    assert m["weave_fdp_peer_rx_packets_total"][host2] == 90 + 700 * 10
    assert m["weave_fdp_drops_total"][(("reason", "no_route"),)] == 22
    assert m["weave_fdp_connection_rtt_seconds"][(("mode", "fastdp"), ("nickname", "host2"),
                                                  ("peer", "7e:aa:00:00:00:02"))] == pytest.approx(0.00021)
    assert m["weave_fdp_ipam_enabled"][()] == 1 and m["weave_fdp_ipam_owned"][()] == 349525
    assert m["weave_fdp_dns_entries"][()] == 3
    assert m["weave_fdp_router_info"][(("encryption", "false"), ("name", "7e:aa:00:00:00:01"),
                                       ("nickname", "host1"), ("version", "0.1.0"))] == 1


def test_disabled_sections_and_empty_datapath() -> None:
    report = json.loads((FIXTURES / "report_minimal.json").read_text())
    m = scrape(lambda: report)
    assert m["weave_fdp_ipam_enabled"][()] == 0 and m["weave_fdp_dns_enabled"][()] == 0
    assert m["weave_fdp_flows"] == {(("path", "fastdp"),): 0}
    assert "weave_fdp_drops_total" not in m


def test_a_failing_or_garbage_report_still_scrapes() -> None:
    def boom():
        raise RuntimeError("router state locked")

    for get in (boom, lambda: None, lambda: [1, 2], lambda: "x"):
        assert scrape(get) == {"weave_fdp_up": {(): 0.0}}
    garbage = {"peers": "x", "connections": [1, {"state": 5, "mode": [], "tx_bytes": "9"}],
               "datapath": {"flows": {"a": 1}, "peers": [{"peer": None, "tx_bytes": True}], "drops": {"x": "1"}},
               "ipam": {"enabled": 3, "enabled ": 4, "ranges": [1, 2], "name": "r"}, "dns": 7,
               "router": ["x"]}
    m = scrape(lambda: garbage)
    assert m["weave_fdp_up"][()] == 1
    assert m["weave_fdp_ipam_enabled"][()] == 1 and m["weave_fdp_ipam_ranges"][()] == 2
    assert m["weave_fdp_dns_enabled"][()] == 0


@pytest.mark.parametrize(("addr", "want"), [
    ("127.0.0.1:6782", ("127.0.0.1", 6782)), (":9100", ("0.0.0.0", 9100)), ("[::1]:9100", ("::1", 9100)),
    ("host1:80", ("host1", 80)),
])
def test_parse_addr(addr, want) -> None:
    assert parse_addr(addr) == want


@pytest.mark.parametrize("addr", ["6782", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:70000", "::1:80", ""])
def test_parse_addr_refuses_with_the_fix(addr) -> None:
    with pytest.raises(UsageError, match="--metrics-addr"):
        parse_addr(addr)


def test_only_the_metrics_path_answers() -> None:
    import urllib.error
    import urllib.request

    from weave_fdp.router.metrics import serve_metrics

    server, thread = serve_metrics("127.0.0.1", 0, lambda: {})
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            assert resp.status == 200 and b"weave_fdp_up" in resp.read()
        for path in ("/", "/favicon.ico", "/metrics/x", "/anything?x=1", "/metricsfoo"):
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(f"{base}{path}", timeout=10)
            assert ei.value.code == 404, path
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(urllib.request.Request(f"{base}/metrics", data=b"x", method="POST"), timeout=10)
        assert ei.value.code == 405
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_dns_answers_by_who_gave_them() -> None:
    report = {"router": {"name": "7e:aa:00:00:00:01"},
              "dns": {"entries": [], "stats": {"queries": 12, "answered": 10, "nxdomain": 2, "udp_process_pid": 99},
                      "kernel": {"answered": 500, "rate_limited": 3, "pass_miss": 12, "on": True, "names": 4}}}
    m = scrape(lambda: report)
    assert m["weave_fdp_dns_answered_total"] == {(("by", "kernel"),): 500, (("by", "server"),): 10}
    assert m["weave_fdp_dns_kernel_total"] == {(("what", "answered"),): 500, (("what", "rate_limited"),): 3,
                                               (("what", "pass_miss"),): 12}
    assert m["weave_fdp_dns_server_total"][(("what", "nxdomain"),)] == 2
    assert (("what", "udp_process_pid"),) not in m["weave_fdp_dns_server_total"]
    # without fastdp: the server alone
    report["dns"]["kernel"] = None
    m = scrape(lambda: report)
    assert m["weave_fdp_dns_answered_total"] == {(("by", "server"),): 10}
