"""The dashboard's copy of the router's flow table, kept current by the ``top`` op (pure).

Each second the dashboard asks only for the flows changed since its last answer
(router/flow_delta.py) and folds them into the rows it holds, so it decodes a few
rows instead of the whole table. It asks for the whole table at its first fetch,
every ``RESYNC_S`` seconds (flows the kernel evicted leave the copy then), and
whenever the router's count says rows were evicted. What it hands on is a report
in the very shape ``report`` returns, so the rest of the dashboard is unchanged.
"""

from __future__ import annotations

from typing import Any

RESYNC_S = 30.0   # s between full fetches
MARGIN_S = 0.5    # s of overlap between answers: a row's last_seen may lag its change (coarse kernel clock)

FlowKey = tuple[Any, ...]


def flow_key(row: dict[str, Any]) -> FlowKey:
    """What tells two rows apart: the flow's MACs and 5-tuple, and which datapath counted it."""
    g = row.get
    key = (g("src_mac"), g("dst_mac"), g("src_ip"), g("dst_ip"), g("proto"), g("sport"), g("dport"),
           g("ethertype"), g("path"))
    try:
        hash(key)
    except TypeError:   # damaged input: a list where a scalar belongs
        key = tuple(repr(v) for v in key)
    return key


class FlowCache:
    """Rows by key, and when the router last answered (its ``as_of``)."""

    def __init__(self, resync_s: float = RESYNC_S) -> None:
        self.resync_s = resync_s
        self.rows: dict[FlowKey, dict[str, Any]] = {}
        self.as_of: float | None = None      # the router's time of the last answer
        self.synced_at: float | None = None  # monotonic time of the last full fetch

    def request(self, now: float) -> dict[str, Any]:
        """Args of the next ``top`` call at monotonic time ``now``."""
        if self.as_of is None or self.synced_at is None or now - self.synced_at >= self.resync_s:
            return {"since": None, "limit": None}
        return {"since": self.as_of - MARGIN_S, "limit": 0}

    def merge(self, answer: Any, asked: dict[str, Any], now: float) -> Any:
        """Fold a ``top`` answer to ``asked`` into the copy; the report with every row."""
        if not isinstance(answer, dict):
            return answer
        dp = answer.get("datapath")
        as_of = answer.pop("as_of", None)
        if not isinstance(dp, dict) or not isinstance(dp.get("flows"), list):
            return answer
        full = asked.get("since") is None
        if full:
            self.rows = {}
            self.synced_at = now
        for row in dp["flows"]:
            if isinstance(row, dict):
                self.rows[flow_key(row)] = row
        total = dp.pop("flows_total", None)
        self.as_of = as_of if isinstance(as_of, (int, float)) else None
        if isinstance(total, int) and len(self.rows) > total:
            self.synced_at = None            # rows were evicted: the next fetch is a full one
        dp["flows"] = list(self.rows.values())
        return answer
