"""Drop counters by named cause, logged once per cause (never per packet)."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("weave_fdp.sleeve")


class Drops:
    """``drop(cause, detail)`` counts; the first drop of each cause is logged."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def drop(self, cause: str, detail: str = "") -> None:
        self.counts[cause] += 1
        if self.counts[cause] == 1:
            log.warning("sleeve: dropped a packet: %s%s (further drops of this cause are only counted)",
                        cause, f": {detail}" if detail else "")

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
