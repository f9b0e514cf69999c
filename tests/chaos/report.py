"""What each chaos scenario did and saw, collected for the summary table printed at the end.

A scenario calls ``record(...)`` once per fault it injected; ``tests/chaos/conftest.py``
prints every row after the run (and writes them to build/chaos/summary.json), together
with the last ``make fuzz`` summary (build/fuzz/summary.json) when there is one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "build" / "chaos" / "summary.json"
FUZZ_SUMMARY = ROOT / "build" / "fuzz" / "summary.json"


@dataclass
class Row:
    scenario: str
    fault: str
    faults: int = 1                 # faults injected (e.g. flaps, cycles)
    sent: int | None = None         # probe packets sent during the fault
    lost: int | None = None
    outage_s: float | None = None   # longest run of lost probes, in seconds
    recovery_s: float | None = None  # fault end -> everything back (mesh, mode, attachments)
    leaks: str = "-"                # resources not back where they started
    result: str = "ok"
    notes: list[str] = field(default_factory=list)


ROWS: list[Row] = []


def record(row: Row) -> Row:
    ROWS.append(row)
    print(f"[chaos] {row.scenario}: {row.fault}: faults={row.faults} sent={row.sent} lost={row.lost} "
          f"outage={row.outage_s} s recovery={row.recovery_s} s leaks={row.leaks} -> {row.result}"
          + (f" ({'; '.join(row.notes)})" if row.notes else ""), flush=True)
    return row


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def table() -> str:
    head = ("scenario", "fault", "faults", "sent", "lost", "outage s", "recovery s", "leaks", "result")
    rows = [(r.scenario, r.fault, r.faults, r.sent, r.lost, r.outage_s, r.recovery_s, r.leaks, r.result)
            for r in ROWS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    notes = [f"- {r.scenario} / {r.fault}: {n}" for r in ROWS for n in r.notes]
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(notes)
    if FUZZ_SUMMARY.exists():
        try:
            fz = json.loads(FUZZ_SUMMARY.read_text())
        except ValueError:
            fz = None
        if fz:
            out += (f"\n\nLast `make fuzz` ({fz['seconds_per_target']} s per target):\n\n"
                    "| decoder | bad inputs tried | coverage | crashes |\n|---|---|---|---|\n")
            out += "\n".join(f"| {t['target']} | {t['inputs']} | {t['coverage']} | {len(t['crashes'])} |"
                             for t in fz["targets"])
    return out


def save() -> None:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps([asdict(r) for r in ROWS], indent=1))
