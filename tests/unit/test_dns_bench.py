"""Parsing of dnsperf's output for `weave-fdp bench dns` (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.bench.dns import (Bisection, name_ip, parse_dnsperf, percentile, rate_holds, search_verdict,
                                verbose_latencies)
from weave_fdp.errors import FdpError

pytestmark = pytest.mark.unit

SUMMARY = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 169.254.53.53 -d q -l 3
> NOERROR bench-1.weave.local A 0.000412
> NOERROR bench-2.weave.local A 0.001250
> NXDOMAIN nope.weave.local A 0.000100
Statistics:

  Queries sent:         24342
  Queries completed:    24342 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 24342 (100.00%)
  Average packet size:  request 37, response 53
  Run time (s):         3.001203
  Queries per second:   8110.747845

  Average Latency (s):  0.012214 (min 0.000107, max 0.087645)
  Latency StdDev (s):   0.007461
"""


def test_parse_summary_and_verbose_lines() -> None:
    s = parse_dnsperf(SUMMARY)
    assert s == {"qps": 8110.747845, "sent": 24342, "lost": 0, "mean_ms": pytest.approx(12.214)}
    assert verbose_latencies(SUMMARY) == pytest.approx([0.412, 1.25, 0.1])
    with pytest.raises(FdpError, match="Queries per second"):
        parse_dnsperf("dnsperf: error: no server")


def test_percentile_and_names() -> None:
    vals = [float(v) for v in range(1, 101)]
    assert percentile(vals, 50) == 50 and percentile(vals, 99) == 99 and percentile(vals, 100) == 100
    assert percentile([3.0], 99) == 3.0 and math.isnan(percentile([], 99))
    assert name_ip(1) == "10.32.60.1" and name_ip(250) == "10.32.60.250" and name_ip(251) == "10.32.61.1"


def test_floor_verdict_judges_the_median_p99_and_names_the_limit() -> None:
    from weave_fdp.bench.dns import floor_verdict

    def runs(*p99: float, qps: float = 5000, lost: float = 0) -> list[dict[str, float]]:
        return [{"qps": qps, "p99_ms": p, "lost": lost} for p in p99]

    ok = floor_verdict(10000, runs(1.0, 9.0, 2.0), runs(0.5, 0.6, 0.7), 5)
    assert ok["ok"] and ok["weave_p99_ms"] == 2.0 and ok["weave_share_of_dnsmasq_max"] == 0.5 and not ok["why_not"]
    slow = floor_verdict(10000, runs(6.0, 7.0, 8.0), runs(0.5, 0.6, 0.7), 5)
    assert not slow["ok"] and "p99 7.00 ms" in slow["why_not"] and "machine" not in slow["why_not"]
    assert abs(slow["p99_ratio_weave_to_dnsmasq"] - 11.67) < 0.01
    busy = floor_verdict(10000, runs(6.0, 7.0, 8.0), runs(5.5, 6.0, 9.0), 5)
    assert not busy["ok"] and "the machine is the limit" in busy["why_not"]
    short = floor_verdict(10000, runs(1.0, qps=3000), runs(1.0), 5)
    assert not short["ok"] and "carried 3000 of 5000 qps" in short["why_not"]
    lossy = floor_verdict(10000, runs(1.0, lost=500), runs(1.0), 5)
    assert not lossy["ok"] and "500 lost" in lossy["why_not"]


@given(threshold=st.floats(min_value=0, max_value=100_000), hi=st.integers(min_value=1_000, max_value=100_000),
       steps=st.integers(min_value=1, max_value=10))
def test_bisection_finds_the_highest_rate_that_holds_within_its_resolution(threshold: float, hi: int,
                                                                          steps: int) -> None:
    b = Bisection(hi, steps)
    probes = 0
    while not b.done:
        rate = b.rate()
        b.record(rate, rate <= threshold)
        probes += 1
    assert probes == steps
    assert b.best <= min(threshold, hi)                      # never a rate that did not hold
    assert min(threshold, hi) - b.best <= hi / 2 ** steps + 1   # within the resolution of the steps
    assert [r for r, ok in b.probes if ok] == sorted(r for r, ok in b.probes if ok)


def test_bisection_of_a_noisy_server_keeps_the_best_rate_that_held() -> None:
    b = Bisection(40_000, 3)
    b.record(b.rate(), True)      # 20000 holds
    b.record(b.rate(), False)     # 30000 does not
    b.record(b.rate(), False)     # 25000 does not
    assert b.done and b.best == 20_000 and b.probes == [(20_000, True), (30_000, False), (25_000, False)]


def test_rate_holds_needs_p99_rate_and_few_losses() -> None:
    assert rate_holds({"qps": 9990, "p99_ms": 4.9, "lost": 0}, 10_000, 3)
    assert not rate_holds({"qps": 9990, "p99_ms": 5.0, "lost": 0}, 10_000, 3)
    assert not rate_holds({"qps": 9000, "p99_ms": 1.0, "lost": 0}, 10_000, 3)
    assert not rate_holds({"qps": 9990, "p99_ms": 1.0, "lost": 31}, 10_000, 3)


def test_search_verdict_reads_the_floor_as_the_highest_rate_under_5_ms() -> None:
    ok = search_verdict(60_000, 31_000, 20_000)
    assert ok["ok"] and ok["target_qps"] == 30_000 and ok["best_ratio_weave_to_dnsmasq"] == 1.55
    assert ok["weave_best_share_of_dnsmasq_max"] == 0.517
    no = search_verdict(60_000, 29_000, 40_000)
    assert not no["ok"] and no["best_ratio_weave_to_dnsmasq"] == 0.72
    assert not search_verdict(0, 0, 0)["ok"]


def test_snmp_counter_reads_the_udp_receive_buffer_drops() -> None:
    from weave_fdp.bench.dns import snmp_counter

    text = ("Ip: Forwarding DefaultTTL\nIp: 1 64\n"
            "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
            "Udp: 5729801 21111 7647 5765899 7640 0\n"
            "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdpLite: 0 0 0 0 0 0\n")
    assert snmp_counter(text, "Udp", "RcvbufErrors") == 7640
    assert snmp_counter(text, "UdpLite", "RcvbufErrors") == 0
    with pytest.raises(FdpError, match="lacks Udp Nope"):
        snmp_counter(text, "Udp", "Nope")


def test_lost_queries_count_as_the_timeout_in_the_percentiles() -> None:
    from weave_fdp.bench.dns import TIMEOUT_S, with_lost

    fast = [1.0] * 990
    assert percentile(with_lost(fast, 0), 99) == 1.0
    assert percentile(with_lost(fast, 5), 99) == 1.0                 # 0.5 % lost: p99 still an answer
    assert percentile(with_lost(fast, 20), 99) == TIMEOUT_S * 1000   # 2 % lost: p99 is the timeout
    assert with_lost([2.0], -1) == [2.0]


def test_three_servers_take_turns_first() -> None:
    from weave_fdp.bench.dns import _interleaved

    keys = ("weave", "weave_userspace", "dnsmasq")
    orders = _interleaved(3, keys)
    assert [o[0] for o in orders] == list(keys) and all(sorted(o) == sorted(keys) for o in orders)
    assert _interleaved(2) == [["weave", "dnsmasq"], ["dnsmasq", "weave"]]


def test_answers_are_counted_by_who_gave_them() -> None:
    from weave_fdp.bench.dns import _by, answered_by

    runs = [{"kernel_answers": 10, "server_answers": 2}, {"kernel_answers": 5, "server_answers": 0}, {}]
    assert answered_by(runs) == {"kernel": 15, "server": 2}
    assert _by(runs[0]) == " [answered: 10 in the kernel, 2 by the server]" and _by({}) == ""
