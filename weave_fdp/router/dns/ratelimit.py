"""Per-source token buckets: a query flood from one container is bounded (pure; time passed in).

Each source address may send ``rate`` queries a second on average, ``burst`` at once;
what is over is dropped unanswered (the client retries, as it would after a loss).
The table of sources is bounded: the oldest is forgotten beyond ``max_sources``.
"""

from __future__ import annotations

DEFAULT_RATE = 1000.0      # queries/s per source address
DEFAULT_BURST = 2000.0     # queries at once
MAX_SOURCES = 8192


class SourceLimiter:
    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST,
                 max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}   # source -> (tokens, time)
        self.dropped = 0

    def copy(self) -> SourceLimiter:
        """A limiter alike with a table of its own (one per server thread: no shared state)."""
        return SourceLimiter(self.rate, self.burst, self.max_sources)

    def allow(self, source: str, now: float) -> bool:
        """Count one query from ``source``; False when it is over its rate (drop it)."""
        if self.rate <= 0:
            return True                     # unlimited
        tokens, then = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        else:
            self.dropped += 1
        self._buckets[source] = (tokens, now)   # re-inserted: most recent last
        if len(self._buckets) > self.max_sources:
            self._buckets.pop(next(iter(self._buckets)))
        return ok
