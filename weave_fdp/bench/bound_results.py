"""The arithmetic of ``bench sleeve-bound``: runs in, paired ratios and per-GB costs out. Pure.

A run is one iperf3 TCP stream through one path, pinned or not, in one pass of one
round (each round runs every path twice per placement, in order and then reversed:
A B C | C B A, so pass 0 and pass 1 of a round pair up path by path). Ratios are
paired: run k of a path over run k of the base path (the same round, pass and
placement: made within seconds of each other), then the median and the range of
those ratios, so load that drifts between rounds cancels out.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

PLACEMENTS = ("pinned", "unpinned")


@dataclass(frozen=True)
class Run:
    path: str
    placement: str          # "pinned" or "unpinned"
    round: int
    rep: int                # pass within the round (0: in order, 1: reversed)
    gbps: float
    nbytes: int             # bytes the server received
    busy_s: float           # whole-machine busy CPU seconds over the run (/proc/stat)
    ctxt: int               # whole-machine context switches over the run (/proc/stat)
    load1: float = 0.0      # 1-minute load average when the run started
    own_s: float = 0.0      # CPU seconds of the transfer's processes (as ``bench datapath``'s CPU per GB)

    @property
    def cpu_s_per_gb(self) -> float | None:
        return self.busy_s / (self.nbytes / 1e9) if self.nbytes > 0 else None

    @property
    def own_cpu_s_per_gb(self) -> float | None:
        return self.own_s / (self.nbytes / 1e9) if self.nbytes > 0 else None

    @property
    def ctxt_per_gb(self) -> float | None:
        return self.ctxt / (self.nbytes / 1e9) if self.nbytes > 0 else None


def proc_stat_ctxt(text: str) -> int:
    """Context switches of the whole machine since boot, from /proc/stat's ``ctxt`` line."""
    for line in text.splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise ValueError("/proc/stat has no 'ctxt' line")


def _key(r: Run) -> tuple[str, int, int]:
    return (r.placement, r.round, r.rep)


def paired(runs: list[Run], path: str, base: str, placement: str) -> list[float]:
    """``path``'s throughput over ``base``'s, run by run (same round, pass and placement);
    runs without a partner (one of the two failed) are left out."""
    by_key = {_key(r): r for r in runs if r.path == base and r.placement == placement and r.gbps > 0}
    return [r.gbps / by_key[_key(r)].gbps for r in runs
            if r.path == path and r.placement == placement and _key(r) in by_key]


@dataclass(frozen=True)
class Stat:
    """Median and range of some values (None when there are none)."""

    median: float | None
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        vs = [v for v in values if v is not None]
        if not vs:
            return cls(None, None, None, 0)
        return cls(statistics.median(vs), min(vs), max(vs), len(vs))


def summarize(runs: list[Run], paths: list[str], base: str = "underlay",
              compare: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """placement -> {"paths": path -> figures, "compare": "a/b" -> paired Stat} as plain data."""
    out: dict[str, Any] = {}
    for placement in PLACEMENTS:
        mine = [r for r in runs if r.placement == placement]
        if not mine:
            continue
        rows = {}
        for p in paths:
            rs = [r for r in mine if r.path == p]
            rows[p] = {"gbps": asdict(Stat.of([r.gbps for r in rs])),
                       "share": asdict(Stat.of(paired(runs, p, base, placement))) if p != base else None,
                       "cpu_s_per_gb": asdict(Stat.of([r.cpu_s_per_gb for r in rs])),
                       "own_cpu_s_per_gb": asdict(Stat.of([r.own_cpu_s_per_gb for r in rs])),
                       "ctxt_per_gb": asdict(Stat.of([r.ctxt_per_gb for r in rs]))}
        cmp = {f"{a}/{b}": asdict(Stat.of(paired(runs, a, b, placement)))
               for a, b in compare if a in paths and b in paths}
        out[placement] = {"paths": rows, "compare": cmp}
    return out


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _range(s: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    if not s or s["median"] is None:
        return "-"
    m, lo, hi = (s[k] * scale for k in ("median", "low", "high"))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})" if s["n"] > 1 else f"{m:.{digits}f}"


def table(summary: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """Markdown lines: per placement, a row per path (in the order of ``titles``, then the
    rest), then the paired comparisons."""
    lines: list[str] = []
    for placement in [p for p in PLACEMENTS if p in summary]:
        block = summary[placement]
        order = [p for p in titles if p in block["paths"]] + [p for p in block["paths"] if p not in titles]
        block = {"paths": {p: block["paths"][p] for p in order}, "compare": block["compare"]}
        lines += [f"{placement}:", "",
                  "| path | Gbit/s, median (range) | share of the underlay, paired | CPU s/GB (machine) "
                  "| CPU s/GB (its processes) | context switches / GB |",
                  "|---|---|---|---|---|---|"]
        for p, row in block["paths"].items():
            share = _range(row["share"], 1, 100.0) + " %" if row["share"] and row["share"]["n"] else "-"
            ctxt = row["ctxt_per_gb"]["median"]
            lines.append(f"| {titles.get(p, p)} | {_range(row['gbps'])} | {share} "
                         f"| {_range(row['cpu_s_per_gb'])} | {_range(row.get('own_cpu_s_per_gb'))} "
                         f"| {'-' if ctxt is None else f'{ctxt / 1e3:.0f} k'} |")
        for name, s in block["compare"].items():
            lines.append(f"\n{name}, paired: {_range(s)}")
        lines.append("")
    return lines
