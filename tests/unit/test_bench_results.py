"""The datapath benchmark's pure parts: parsing tool output, CPU time, medians, ratios, table, checks."""

from __future__ import annotations

import json

import pytest

from weave_fdp.bench import results as r

IPERF_TCP = json.dumps({"start": {}, "end": {"sum_sent": {"bytes": 2_000_000_000, "bits_per_second": 8.1e9},
                                             "sum_received": {"bytes": 1_990_000_000, "bits_per_second": 8.0e9}}})
IPERF_UDP = json.dumps({"end": {"sum": {"packets": 999, "lost_packets": 999, "seconds": 3}},
                        "server_output_json": {"end": {"sum": {"start": 0, "end": 3.0, "seconds": 3.0,
                                                               "packets": 300_000, "lost_packets": 60_000}}}})
SOCKPERF = """sockperf: == version #3.7-no.git ==
sockperf: ====> avg-rtt=25.112 (std-dev=3.2)
sockperf: ---> <MAX> observation =  240.109
sockperf: ---> percentile 99.999 =  200.000
sockperf: ---> percentile 99.000 =   41.250
sockperf: ---> percentile 90.000 =   30.000
sockperf: ---> percentile 50.000 =   24.875
sockperf: ---> <MIN> observation =   18.300
"""


def test_parse_iperf_tcp_takes_the_receiver_side() -> None:
    assert r.parse_iperf_tcp(IPERF_TCP) == (8.0e9, 1_990_000_000)


def test_parse_iperf_udp_counts_what_the_server_received() -> None:
    pps, n = r.parse_iperf_udp(IPERF_UDP)
    assert n == 240_000 and pps == pytest.approx(80_000)


def test_parse_iperf_errors_name_the_tool() -> None:
    with pytest.raises(ValueError, match="iperf3: unable to connect"):
        r.parse_iperf_tcp(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(ValueError, match="iperf3 printed no JSON"):
        r.parse_iperf_tcp("iperf3: error")


def test_parse_sockperf_percentiles() -> None:
    pct = r.parse_sockperf(SOCKPERF)
    assert pct[50.0] == 24.875 and pct[99.0] == 41.25 and pct[99.999] == 200.0
    with pytest.raises(ValueError):
        r.parse_sockperf("sockperf: no connection")


def test_proc_stat_busy_excludes_idle_iowait_and_steal() -> None:
    text = "cpu  100 20 30 5000 70 4 6 900 0 0\ncpu0 50 10 15 2500 35 2 3 450 0 0\nintr 1\n"
    assert r.proc_stat_busy(text, user_hz=100) == pytest.approx((100 + 20 + 30 + 4 + 6) / 100)
    with pytest.raises(ValueError):
        r.proc_stat_busy("intr 1\n")


def test_cpu_seconds_per_gb() -> None:
    assert r.cpu_seconds_per_gb(3.0, 2_000_000_000) == pytest.approx(1.5)
    assert r.cpu_seconds_per_gb(3.0, 0) is None


def _samples() -> r.Samples:
    s = r.Samples()
    for v in (10.0, 12.0, 11.0):
        s.add("tcp1_gbps", "underlay", v)
    for v in (8.0, 7.0, 9.0):
        s.add("tcp1_gbps", "vxlan", v)
    for v in (9.0, 10.0, 30.0):  # one outlier: the median ignores it
        s.add("tcp1_gbps", "fastdp", v)
    for p, v in (("underlay", 20.0), ("vxlan", 30.0), ("fastdp", 33.0)):
        s.add("rr_p50_us", p, v)
    s.add("rr_p99_us", "fastdp", None)  # a failed sample is skipped, not zero
    s.add("machine_cpu_s_per_gb", "fastdp", 2.0)
    return s


def test_summarize_medians_and_ratios_of_medians() -> None:
    sm = r.summarize(_samples(), ["underlay", "vxlan", "fastdp"])
    f = sm["tcp1_gbps"]["fastdp"]
    assert f["runs"] == [9.0, 10.0, 30.0] and f["median"] == 10.0
    assert f["vs_vxlan"] == pytest.approx(10 / 8) and f["vs_underlay"] == pytest.approx(10 / 11)
    assert sm["tcp1_gbps"]["vxlan"]["vs_vxlan"] == pytest.approx(1.0)
    assert f["spread"] == pytest.approx((30 - 9) / 2 / 10)
    # per-round ratios 9/8, 10/7, 30/9: their median, not the ratio of medians
    assert f["paired_vs_vxlan"] == pytest.approx(10 / 7)
    assert f["paired_vs_underlay"] == pytest.approx(9 / 10)   # median of 9/10, 10/12, 30/11
    assert sm["rr_p99_us"]["fastdp"] == {"runs": [], "median": None, "spread": None, "vs_vxlan": None,
                                         "vs_underlay": None, "paired_vs_vxlan": None,
                                         "paired_vs_underlay": None}
    assert sm["rr_p50_us"]["fastdp"]["spread"] is None  # one run: no spread
    assert r.ratio(1.0, 0.0) is None and r.median([]) is None


def test_checks_judge_floors_and_aim() -> None:
    sm = r.summarize(_samples(), ["underlay", "vxlan", "fastdp"])
    by = {c.what: c for c in r.checks(sm)}
    assert by["floor: fastdp TCP 1 stream (pinned) ≥ 1.00× kernel VXLAN"].ok is True
    assert by["aim: fastdp TCP 1 stream (pinned) ≥ 1.15× kernel VXLAN"].ok is True      # paired 1.43×
    assert by["aim: fastdp TCP 1 stream (pinned) ≥ 0.85× underlay"].ok is True        # paired 0.90×
    assert by["floor: fastdp p50 latency (1 CPU) ≤ 0.75× kernel VXLAN"].ok is False    # 1.10×
    assert by["floor: fastdp TCP 4 streams ≥ 1.00× kernel VXLAN"].ok is None   # not measured
    assert by["floor: fastdp TCP 1 stream (unpinned) ≥ 1.00× kernel VXLAN"].ok is None
    assert by["floor: fastdp 64-byte UDP rate ≥ 1.60× kernel VXLAN"].ok is None
    assert not any("sleeve" in w for w in by)                                  # sleeve not in the run
    # Only the placement that was measured gets a verdict line.
    assert r.verdicts(r.checks(sm)) == ["verdict, fastdp TCP 1 stream pinned: floor met, aims met"]


def test_unpinned_rounds_are_judged_on_their_own() -> None:
    s = r.Samples()
    for metric, runs in (("tcp1_gbps", ((10.0, 12.0, 11.0), (10.0, 11.0, 12.0))),
                         ("tcp1u_gbps", ((10.0, 9.8, 12.0), (9.0, 9.5, 12.5)))):
        for vx, fd, ul in zip(runs[0], runs[1], (14.0, 14.0, 14.0), strict=True):
            s.add(metric, "vxlan", vx)
            s.add(metric, "fastdp", fd)
            s.add(metric, "underlay", ul)
    found = r.checks(r.summarize(s, ["underlay", "vxlan", "fastdp"]))
    by = {c.what: c for c in found}
    assert by["floor: fastdp TCP 1 stream (pinned) ≥ 1.00× kernel VXLAN"].ok is True     # 1.00, 0.92, 1.09
    assert by["floor: fastdp TCP 1 stream (unpinned) ≥ 1.00× kernel VXLAN"].ok is False  # 0.90, 0.97, 1.04
    assert by["floor: fastdp TCP 1 stream (unpinned) ≥ 1.00× kernel VXLAN"].detail.startswith("0.97× paired")
    assert by["aim: fastdp TCP 1 stream (unpinned) ≥ 0.85× underlay"].ok is False       # 0.68×
    # the sleeve's own aims per placement do not count in fastdp's verdicts
    found.append(r.Check("aim: sleeve TCP 1 stream (pinned) ≥ 30% of underlay", False, "20%"))
    assert r.verdicts(found) == ["verdict, fastdp TCP 1 stream pinned: floor met, aims 2 of 2 not met",
                                 "verdict, fastdp TCP 1 stream unpinned: floor 1 of 1 not met, aims 2 of 2 not met"]


def test_sleeve_floor_is_a_share_of_the_underlay() -> None:
    s = r.Samples()
    s.add("tcp1_gbps", "underlay", 10.0)
    s.add("tcp1_gbps", "sleeve", 0.9)
    c, aim = r.checks(r.summarize(s, ["underlay", "sleeve"]))
    assert c.ok is False and c.detail == "9.0%"
    assert aim.what == "aim: sleeve TCP 1 stream (pinned) ≥ 30% of underlay" and aim.ok is False


def test_sleeve_aims_are_judged_on_paired_ratios_per_placement() -> None:
    s = r.Samples()
    for metric in ("tcp1_gbps", "tcp1u_gbps"):
        for ul, pl, enc in ((10.0, 3.2, 2.1), (20.0, 6.2, 4.1), (10.0, 2.0, 1.0)):   # 0.32/0.31/0.20, 0.21/0.205/0.1
            s.add(metric, "underlay", ul)
            s.add(metric, "sleeve", pl)
            s.add(metric, "sleeve_enc", enc)
    by = {c.what: c for c in r.checks(r.summarize(s, ["underlay", "sleeve", "sleeve_enc"]))}
    assert by["aim: sleeve TCP 1 stream (unpinned) ≥ 30% of underlay"].ok is True
    assert by["aim: encrypted sleeve TCP 1 stream (pinned) ≥ 20% of underlay"].ok is True
    assert by["aim: encrypted sleeve TCP 1 stream (pinned) ≥ 20% of underlay"].detail.startswith("0.20× paired")


def test_table_rows_and_markdown() -> None:
    paths = ["underlay", "vxlan", "fastdp"]
    sm = r.summarize(_samples(), paths)
    rows = r.table_rows(sm, paths)
    tcp1 = next(row for row in rows if row[0].startswith("TCP 1 stream"))
    assert tcp1[3] == "10.00 ±105%\n1.25× vx\n0.91× ul"
    # Rows only for metrics measured on some path (p99 has no sample at all), never the --json-only ones.
    assert [row[0] for row in rows] == ["TCP 1 stream (Gbit/s)", "TCP RR RTT p50, 1 CPU (µs)"]
    assert all(len(row) == 1 + len(paths) for row in rows)
    # Without the kernel VXLAN path there is no "vx" ratio to show.
    assert r.table_rows(sm, ["underlay", "fastdp"])[0][2] == "10.00 ±105%\n0.91× ul"
    md = r.markdown_table(sm, paths).splitlines()
    assert md[0] == "| metric | underlay (no overlay) | kernel VXLAN + bridge | fastdp |"
    assert "10.00 ±105%<br>1.25× vx<br>0.91× ul" in md[2]


def test_floors_are_judged_on_the_paired_ratio_not_the_ratio_of_medians() -> None:
    # One slow fastdp round drags the ratio of medians below 1; each round's own pair says 1.2×.
    s = r.Samples()
    for vx, fd in ((10.0, 12.0), (12.0, 14.4), (14.0, 8.0), (8.0, 9.6), (13.0, 15.6)):
        s.add("tcp1_gbps", "vxlan", vx)
        s.add("tcp1_gbps", "fastdp", fd)
    sm = r.summarize(s, ["vxlan", "fastdp"])
    assert sm["tcp1_gbps"]["fastdp"]["vs_vxlan"] == pytest.approx(12.0 / 12.0)
    by = {c.what: c for c in r.checks(sm)}
    floor = by["floor: fastdp TCP 1 stream (pinned) ≥ 1.00× kernel VXLAN"]
    assert floor.ok is True
    assert floor.detail == "1.20× paired (median of 5 per-round ratios; ratio of medians 1.00×)"
    assert by["aim: fastdp TCP 1 stream (pinned) ≥ 1.15× kernel VXLAN"].ok is True


def test_unpaired_rounds_fall_back_to_the_ratio_of_medians() -> None:
    s = r.Samples()
    for v in (10.0, 11.0):
        s.add("tcp1_gbps", "vxlan", v)
    s.add("tcp1_gbps", "fastdp", 9.0)   # a failed round: not paired
    by = {c.what: c for c in r.checks(r.summarize(s, ["vxlan", "fastdp"]))}
    c = by["floor: fastdp TCP 1 stream (pinned) ≥ 1.00× kernel VXLAN"]
    assert c.ok is False and c.detail.endswith("(ratio of medians: rounds not paired)")
