"""Pure parts of the datapath benchmark: parse tool output, medians, ratios, table rows.

Nothing here touches the kernel or runs a process, so it is unit tested without
root (tests/unit/test_bench_results.py). The runner (``datapath.py``) feeds it
samples; the CLI renders the rows it returns.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

# Path keys in table order, and their titles.
PATHS: dict[str, str] = {
    "underlay": "underlay (no overlay)",
    "vxlan": "kernel VXLAN + bridge",
    "fastdp": "fastdp",
    "sleeve": "sleeve",
    "sleeve_enc": "sleeve encrypted",
}
BASE_PEER = "vxlan"      # the kernel path fastdp must beat
BASE_LIMIT = "underlay"  # the limit


@dataclass(frozen=True)
class Metric:
    """One row of the table: how to show it and which way is better."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    digits: int
    shown: bool = True   # False: in --json only


METRICS: tuple[Metric, ...] = (
    Metric("tcp1_gbps", "TCP 1 stream", "Gbit/s", True, 2),
    Metric("tcp1u_gbps", "TCP 1 stream, unpinned", "Gbit/s", True, 2),
    Metric("tcp4_gbps", "TCP 4 streams", "Gbit/s", True, 2),
    Metric("rr_p50_us", "TCP RR RTT p50, 1 CPU", "µs", False, 1),
    Metric("rr_p99_us", "TCP RR RTT p99, 1 CPU", "µs", False, 1),
    Metric("rr2_p50_us", "TCP RR RTT p50, 2 CPUs", "µs", False, 1),
    Metric("rr2_p99_us", "TCP RR RTT p99, 2 CPUs", "µs", False, 1),
    Metric("udp64_kpps", "UDP 64 B received", "kpps", True, 1),
    Metric("cpu_s_per_gb", "CPU, TCP 1 stream", "CPU s/GB", False, 2),
    Metric("cpuu_s_per_gb", "CPU, TCP 1 stream, unpinned", "CPU s/GB", False, 2),
    Metric("cpu4_s_per_gb", "CPU, TCP 4 streams", "CPU s/GB", False, 2),
    # The whole machine's busy time over the same runs: includes whatever else runs.
    Metric("machine_cpu_s_per_gb", "machine CPU, TCP 1 stream", "CPU s/GB", False, 2, shown=False),
    Metric("machine_cpu4_s_per_gb", "machine CPU, TCP 4 streams", "CPU s/GB", False, 2, shown=False),
    Metric("machine_cpuu_s_per_gb", "machine CPU, TCP 1 stream unpinned", "CPU s/GB", False, 2, shown=False),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


# ---------------------------------------------------------------- parsing tool output

def parse_iperf_tcp(text: str) -> tuple[float, int]:
    """(bits/s received, bytes received) from ``iperf3 -J`` of a TCP client."""
    doc = _json(text, "iperf3")
    s = doc["end"]["sum_received"]
    return float(s["bits_per_second"]), int(s["bytes"])


def parse_iperf_udp(text: str) -> tuple[float, int]:
    """(packets/s received, packets received) from ``iperf3 -u -J --get-server-output``.

    The server's own report is the truth for what arrived: packets it counted
    minus the ones it saw missing, over its measuring time.
    """
    doc = _json(text, "iperf3")
    srv = doc.get("server_output_json")
    if srv:
        s = srv["end"]["sum"]
    else:  # older iperf3: the client's copy of the server's counters
        s = doc["end"]["sum"]
    received = int(s["packets"]) - int(s["lost_packets"])
    seconds = float(s.get("seconds") or (float(s["end"]) - float(s["start"])))
    if seconds <= 0:
        raise ValueError("iperf3 reported a zero-length UDP run")
    return max(received, 0) / seconds, max(received, 0)


def _json(text: str, tool: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{tool} printed no JSON: {text[:200]!r}") from exc
    if "error" in doc:
        raise ValueError(f"{tool}: {doc['error']}")
    return doc


_PCT = re.compile(r"--->\s+percentile\s+([0-9.]+)\s*=\s*([0-9.]+)")


def parse_sockperf(text: str) -> dict[float, float]:
    """Percentile -> microseconds from ``sockperf ping-pong`` output (e.g. {50.0: 21.3, 99.0: 40.1})."""
    out = {float(p): float(v) for p, v in _PCT.findall(text)}
    if not out:
        raise ValueError(f"sockperf printed no percentiles: {text[-300:]!r}")
    return out


# ---------------------------------------------------------------- CPU time

def proc_stat_busy(text: str, user_hz: int = 100) -> float:
    """Busy CPU seconds of all CPUs together from /proc/stat's first ("cpu") line.

    Busy = user + nice + system + irq + softirq (guest time is already inside
    user); idle, iowait and steal (time the hypervisor gave to others) are not ours.
    """
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq = f[:7]
            return (user + nice + system + irq + softirq) / user_hz
    raise ValueError("/proc/stat has no 'cpu' line")


def cpu_seconds_per_gb(busy_s: float, nbytes: int) -> float | None:
    """CPU seconds per 10^9 bytes moved (None when nothing moved)."""
    if nbytes <= 0:
        return None
    return busy_s / (nbytes / 1e9)


# ---------------------------------------------------------------- summary

@dataclass
class Samples:
    """Every sample of one run: metric -> path -> values (one per round)."""

    data: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, metric: str, path: str, value: float | None) -> None:
        if value is None:
            return
        self.data.setdefault(metric, {}).setdefault(path, []).append(float(value))

    def runs(self, metric: str, path: str) -> list[float]:
        return list(self.data.get(metric, {}).get(path, []))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, None when either is missing or base is zero."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def spread(values: list[float]) -> float | None:
    """Half the range of the runs relative to their median (0.1 = ±10%); None under 2 runs."""
    med = median(values)
    if len(values) < 2 or not med:
        return None
    return (max(values) - min(values)) / 2 / abs(med)


def paired_ratio(values: list[float], base: list[float]) -> float | None:
    """Median of the per-round ratios (round k of ``values`` over round k of ``base``).

    The paths of one round run back to back, so this cancels load that drifts
    between rounds (other work on the machine); None unless every round has both.
    """
    if not values or len(values) != len(base) or any(b == 0 for b in base):
        return None
    return statistics.median(v / b for v, b in zip(values, base))


def summarize(samples: Samples, paths: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """metric -> path -> {"runs", "median", "spread", "vs_vxlan", "vs_underlay", "paired_vs_vxlan",
    "paired_vs_underlay"}.

    ``vs_*`` are ratios of medians (what the table shows); ``paired_vs_*`` the
    medians of per-round ratios (--json only)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in METRICS:
        meds = {p: median(samples.runs(m.key, p)) for p in paths}
        out[m.key] = {p: {"runs": samples.runs(m.key, p), "median": meds[p],
                          "spread": spread(samples.runs(m.key, p)),
                          "vs_vxlan": ratio(meds[p], meds.get(BASE_PEER)),
                          "paired_vs_vxlan": paired_ratio(samples.runs(m.key, p), samples.runs(m.key, BASE_PEER)),
                          "paired_vs_underlay": paired_ratio(samples.runs(m.key, p),
                                                             samples.runs(m.key, BASE_LIMIT)),
                          "vs_underlay": ratio(meds[p], meds.get(BASE_LIMIT))}
                      for p in paths}
    return out


@dataclass(frozen=True)
class Check:
    """One floor or aim of the issues (fastdp ones judged on the paired per-round ratios)."""

    what: str
    ok: bool | None   # None: could not be judged (a path or metric missing)
    detail: str


def _fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def judged_ratio(cell: dict[str, Any], base: str = BASE_PEER) -> tuple[float | None, str]:
    """The ratio a floor is judged on, and how it was made.

    The paired ratio (median of per-round fastdp/VXLAN ratios): the two paths of a
    round run back to back, so load that drifts between rounds on a shared machine
    cancels, where one slow round moves a ratio of medians by its whole spread.
    Falls back to the ratio of medians when rounds are unpaired (a failed run,
    results saved before the paired ratio existed).
    """
    paired, of_medians = cell.get(f"paired_vs_{base}"), cell.get(f"vs_{base}")
    n = len(cell.get("runs") or [])
    if paired is not None:
        return paired, f"{_fmt_ratio(paired)} paired (median of {n} per-round ratios; ratio of medians " \
                       f"{_fmt_ratio(of_medians)})"
    return of_medians, f"{_fmt_ratio(of_medians)} (ratio of medians: rounds not paired)"


def checks(summary: dict[str, dict[str, dict[str, Any]]]) -> list[Check]:
    """Floors (issue 4: fastdp vs kernel VXLAN; issue 5: sleeve vs underlay) and the aim."""
    def r(metric: str, path: str, key: str) -> float | None:
        return summary.get(metric, {}).get(path, {}).get(key)

    out: list[Check] = []
    paths = set(summary.get("tcp1_gbps", {})) | set(summary.get("rr_p50_us", {}))
    if {"fastdp", BASE_PEER} <= paths:
        out.extend(_fastdp_checks(summary))
    for path, title, aim in (("sleeve", "sleeve", SLEEVE_AIM), ("sleeve_enc", "encrypted sleeve", SLEEVE_ENC_AIM)):
        if {path, BASE_LIMIT} <= paths:
            v = r("tcp1_gbps", path, "vs_underlay")
            out.append(Check(f"floor: {title} TCP 1 stream ≥ 10% of underlay", None if v is None else v >= 0.10,
                             "n/a" if v is None else f"{100 * v:.1f}%"))
            for metric, placed in PLACEMENTS:
                if summary.get(metric, {}).get(path, {}).get("runs"):
                    u, detail = judged_ratio(summary[metric][path], BASE_LIMIT)
                    out.append(Check(f"aim: {title} TCP 1 stream ({placed}) ≥ {100 * aim:.0f}% of underlay",
                                     None if u is None else u >= aim, detail))
    return out


# The sleeve's aims (issue 17), each a share of the underlay on one TCP stream.
SLEEVE_AIM = 0.30
SLEEVE_ENC_AIM = 0.20


# Verdict groups of the fastdp checks: iperf3 pinned (tcp1) and unpinned (tcp1u).
PLACEMENTS = (("tcp1_gbps", "pinned"), ("tcp1u_gbps", "unpinned"))


def _fastdp_checks(summary: dict[str, dict[str, dict[str, Any]]]) -> list[Check]:
    """fastdp against the kernel VXLAN path (paired ratios): the 1-stream floor and aims for
    each placement (pinned, unpinned), fastdp's share of the underlay, 4 streams, latency
    and 64-byte packet rate."""
    def judged(metric: str, base: str = BASE_PEER) -> tuple[float | None, str]:
        return judged_ratio(summary.get(metric, {}).get("fastdp", {}), base)

    def check(what: str, v: float | None, ok: bool, detail: str) -> Check:
        return Check(what, None if v is None else ok, detail)

    out = []
    for metric, placed in PLACEMENTS:
        v, detail = judged(metric)
        out.append(check(f"floor: fastdp TCP 1 stream ({placed}) ≥ 1.00× kernel VXLAN",
                         v, v is not None and v >= 1.0, detail))
        out.append(check(f"aim: fastdp TCP 1 stream ({placed}) ≥ 1.15× kernel VXLAN",
                         v, v is not None and v >= 1.15, detail))
        if BASE_LIMIT in summary.get(metric, {}):
            u, detail = judged(metric, BASE_LIMIT)
            out.append(check(f"aim: fastdp TCP 1 stream ({placed}) ≥ 0.85× underlay",
                             u, u is not None and u >= 0.85, detail))
    v, detail = judged("tcp4_gbps")
    out.append(check("floor: fastdp TCP 4 streams ≥ 1.00× kernel VXLAN", v, v is not None and v >= 1.0, detail))
    v, detail = judged("rr_p50_us")
    out.append(check("floor: fastdp p50 latency (1 CPU) ≤ 0.75× kernel VXLAN", v,
                     v is not None and round(v, 2) <= 0.75, detail))
    v, detail = judged("rr2_p50_us")
    out.append(check("floor: fastdp p50 latency (2 CPUs) ≤ 1.05× kernel VXLAN", v, v is not None and v <= 1.05,
                     detail))
    v, detail = judged("udp64_kpps")
    out.append(check("floor: fastdp 64-byte UDP rate ≥ 1.60× kernel VXLAN", v, v is not None and v >= 1.6, detail))
    return out


def verdicts(found: list[Check]) -> list[str]:
    """One line per placement (pinned, unpinned): fastdp's TCP 1 stream floors and aims met or not,
    in words (the sleeve's aims have lines of their own)."""
    lines = []
    for _, placed in PLACEMENTS:
        mine = [c for c in found if f"fastdp TCP 1 stream ({placed})" in c.what]
        if not mine or all(c.ok is None for c in mine):
            continue
        floors = [c for c in mine if c.what.startswith("floor")]
        aims = [c for c in mine if c.what.startswith("aim")]
        lines.append(f"verdict, fastdp TCP 1 stream {placed}: floor {_met(floors)}, aims {_met(aims)}")
    return lines


def _met(cs: list[Check]) -> str:
    if any(c.ok is None for c in cs):
        return "not all judged"
    missed = sum(1 for c in cs if not c.ok)
    return "met" if not missed else f"{missed} of {len(cs)} not met"


# ---------------------------------------------------------------- table

def fmt_value(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table_rows(summary: dict[str, dict[str, dict[str, Any]]], paths: list[str]) -> list[list[str]]:
    """Rows for the table: [metric (unit), then per path "median ±spread\\nR× vx\\nR× ul"].

    Ratios are of medians; for latency and CPU a ratio below 1 is better; the
    spread is half the range of the runs relative to the median.
    """
    rows = []
    for m in METRICS:
        per = summary.get(m.key)
        if not per or not m.shown or all(per.get(p, {}).get("median") is None for p in paths):
            continue
        row = [f"{m.title} ({m.unit})"]
        for p in paths:
            cell = per.get(p, {})
            lines = [fmt_value(cell.get("median"), m.digits)]
            if cell.get("spread") is not None:
                lines[0] += f" ±{100 * cell['spread']:.0f}%"
            rv, ru = cell.get("vs_vxlan"), cell.get("vs_underlay")
            if BASE_PEER in paths:
                lines.append(f"{_fmt_ratio(rv)} vx")
            if BASE_LIMIT in paths:
                lines.append(f"{_fmt_ratio(ru)} ul")
            row.append("\n".join(lines))
        rows.append(row)
    return rows


def markdown_table(summary: dict[str, dict[str, dict[str, Any]]], paths: list[str]) -> str:
    """The same table in Markdown (for docs/PERFORMANCE.md)."""
    head = ["metric"] + [PATHS.get(p, p) for p in paths]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(summary, paths):
        lines.append("| " + " | ".join(c.replace("\n", "<br>") for c in row) + " |")
    return "\n".join(lines)
