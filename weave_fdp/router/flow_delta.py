"""The API op ``top``: the report with only the flows a live view needs (pure selection).

A dashboard refreshing every second does not need 10,000 unchanged flow rows each
time (decoding them costs it more than everything else). ``top`` answers with the
whole report except ``datapath.flows``, which holds

- with ``since`` (a time from a previous answer's ``as_of``): the rows whose
  ``last_seen`` is later (the changed rows; rows without a ``last_seen`` always);
- without it: every row (a client's first fetch, or its periodic resync);
- plus, with ``limit`` N, the N rows with the most bytes (top-N).

``datapath.flows_total`` says how many rows the full table has (a client that
keeps rows learns that some were evicted), ``as_of`` (wall-clock seconds) is
taken before the flows are read, so nothing that changes while the report is
built is missed by the next ``since``.

Args: ``since`` (number or null), ``limit`` (0..100000 or null). Older routers lack
the op; clients fall back to ``report`` (see dashboard/source.py).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from weave_fdp.errors import UsageError

MAX_LIMIT = 100_000


def check_args(args: dict[str, Any]) -> tuple[float | None, int | None]:
    """(since, limit) from the op's args; UsageError naming the bad one."""
    since, limit = args.get("since"), args.get("limit")
    if since is not None and (type(since) not in (int, float) or not math.isfinite(since)):
        raise UsageError(f"since {str(since)[:40]!r} is not a time", fix="pass the as_of of a previous answer")
    if limit is not None and (type(limit) is not int or not 0 <= limit <= MAX_LIMIT):
        raise UsageError(f"limit {str(limit)[:40]!r} out of range", fix=f"use 0..{MAX_LIMIT}")
    return since, limit


def _bytes(row: dict[str, Any]) -> int:
    b = row.get("bytes")
    return b if type(b) is int else 0


def select_flows(flows: list[dict[str, Any]], since: float | None, limit: int | None) -> list[dict[str, Any]]:
    """The rows of ``flows`` to send (see the module docstring), in table order."""
    if since is None:
        chosen = set(range(len(flows))) if limit is None else set()
    else:
        chosen = {i for i, f in enumerate(flows)
                  if not isinstance(f.get("last_seen"), (int, float)) or f["last_seen"] > since}
    if limit:
        chosen.update(heapq.nlargest(limit, range(len(flows)), key=lambda i: _bytes(flows[i])))
    return [flows[i] for i in sorted(chosen)]


def top_report(report: dict[str, Any], as_of: float, since: float | None, limit: int | None) -> dict[str, Any]:
    """``report`` (built after ``as_of`` was taken) as the ``top`` op answers it."""
    dp = report.get("datapath")
    if isinstance(dp, dict) and isinstance(dp.get("flows"), list):
        flows = dp["flows"]
        report["datapath"] = {**dp, "flows": select_flows(flows, since, limit), "flows_total": len(flows)}
    report["as_of"] = as_of
    return report
