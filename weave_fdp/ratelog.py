"""Log each cause at most once per interval: what the network or the disk sends may repeat
thousands of times a second, and the log must stay readable (and bounded).

    rl = RateLimitedLog(logging.getLogger(__name__), interval=10.0)
    rl.warning("handshake failed", "inbound handshake from %s failed: %s", addr, why)

The first event of a cause is logged at once; later ones within ``interval`` are only
counted, and the next one logged after the interval says how many were suppressed.
Time is passed in (``clock``) so the logic is testable without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_S = 10.0
MAX_CAUSES = 1024   # distinct causes remembered; the oldest is forgotten beyond (bounded memory)


@dataclass
class _Cause:
    last_logged: float
    suppressed: int = 0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._causes: dict[str, _Cause] = {}
        self.total: dict[str, int] = {}

    def log(self, level: int, cause: str, msg: str, *args: object) -> bool:
        """Count ``cause``; log ``msg % args`` if it was not logged within the interval.
        Returns whether a line was written."""
        self.total[cause] = self.total.get(cause, 0) + 1
        if len(self.total) > MAX_CAUSES:
            self.total.pop(next(iter(self.total)))
        now = self.clock()
        c = self._causes.get(cause)
        if c is not None and now - c.last_logged < self.interval:
            c.suppressed += 1
            return False
        suppressed = c.suppressed if c is not None else 0
        self._causes.pop(cause, None)
        self._causes[cause] = _Cause(now)
        if len(self._causes) > MAX_CAUSES:
            self._causes.pop(next(iter(self._causes)))
        if suppressed:
            msg = f"{msg} (and {suppressed} more of this kind in the last {self.interval:g} s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, cause: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, msg, *args)

    def info(self, cause: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, msg, *args)

    def error(self, cause: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, cause, msg, *args)
