"""What an inbound TCP peer may cost the router before and after its handshake (pure logic).

Three bounded books, each keyed by *source* (the remote address; IPv6 by its /64, since one
host commonly holds a whole /64), with time passed in:

- ``HandshakeAdmission``: may a new connection start a handshake? At most ``per_source``
  pending handshakes and ``source_burst`` new connections (refilled at ``source_rate``/s)
  per source, then the same overall. One host opening many silent connections fills only
  its own share, so a genuine peer elsewhere can always join or reconnect.
- ``RxBudget``: bytes of large frame bodies being received, overall and per source.
  A frame is reserved before its body is read, so announcing a big frame costs nothing
  until the budget grants it, and the router's memory for frames in flight is bounded
  whatever the number of connections.
- ``InboundFailures``: failed inbound handshakes aggregated per source (count, last reason,
  first and last time), for ``status connections``: one row per source, not per attempt.
- ``write_overflow``: bytes queued to peers that do not read, per peer and overall.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# handshakes (docs/SECURITY.md "Control-plane limits")
MAX_HANDSHAKES = 32          # pending (unauthenticated) handshakes, overall
MAX_HANDSHAKES_PER_SOURCE = 4
ACCEPT_RATE = 20.0           # new connections per second, overall (token bucket)
ACCEPT_BURST = 40
SOURCE_RATE = 2.0            # new connections per second from one source
SOURCE_BURST = 8
MAX_SOURCES = 4096           # sources remembered at once (bounded memory)

# frame bodies in flight
SMALL_FRAME = 64 << 10       # bytes; frames up to this size need no reservation
RX_BUDGET = 32 << 20         # bytes of large frame bodies being received, overall
RX_BUDGET_PER_SOURCE = 8 << 20   # ... from one source (at least one largest frame)

# bytes queued to peers
MAX_WRITE_BUFFER = 32 << 20  # to one peer before we give up on it
MAX_WRITE_TOTAL = 64 << 20   # to all peers together
WRITE_CHECKED = 1 << 20      # a queue this long is checked against the total

# failure book
FAILURE_SOURCES = 32         # sources shown
FAILURE_WINDOW_S = 120.0     # a source is shown this long after its last failure


def source_of(host: str) -> str:
    """The key limits are counted under: the address itself, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Bucket:
    tokens: float
    at: float

    def take(self, now: float, rate: float, burst: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _Source:
    bucket: _Bucket
    pending: int = 0


class HandshakeAdmission:
    """Admit or refuse new inbound connections; ``done`` when an admitted handshake ends."""

    def __init__(self, *, max_pending: int = MAX_HANDSHAKES, per_source: int = MAX_HANDSHAKES_PER_SOURCE,
                 rate: float = ACCEPT_RATE, burst: float = ACCEPT_BURST, source_rate: float = SOURCE_RATE,
                 source_burst: float = SOURCE_BURST, max_sources: int = MAX_SOURCES) -> None:
        self.max_pending, self.per_source = max_pending, per_source
        self.rate, self.burst = rate, burst
        self.source_rate, self.source_burst = source_rate, source_burst
        self.max_sources = max_sources
        self.pending = 0
        self._global: _Bucket | None = None
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def admit(self, source: str, now: float) -> str | None:
        """None: admitted (call ``done(source)`` when its handshake ends); else why not.

        The source's own limits are checked first, so a refused flood from one source
        spends none of the overall allowance that other sources rely on.
        """
        src = self._sources.get(source)
        if src is None:
            src = _Source(_Bucket(self.source_burst, now))
            self._sources[source] = src
            self._forget_idle(now)
        else:
            self._sources.move_to_end(source)
        if src.pending >= self.per_source:
            return f"{src.pending} handshakes from {source} already pending"
        if not src.bucket.take(now, self.source_rate, self.source_burst):
            return f"more than {self.source_rate:g} new connections per second from {source}"
        if self.pending >= self.max_pending:
            return f"{self.pending} handshakes pending (the most accepted at once)"
        if self._global is None:
            self._global = _Bucket(self.burst, now)
        if not self._global.take(now, self.rate, self.burst):
            return f"more than {self.rate:g} new connections per second"
        src.pending += 1
        self.pending += 1
        return None

    def done(self, source: str) -> None:
        src = self._sources.get(source)
        if src is not None and src.pending > 0:
            src.pending -= 1
            self.pending -= 1

    def _forget_idle(self, now: float) -> None:
        """Over ``max_sources``: forget the least recently seen sources with nothing pending
        (a forgotten source starts again with a full bucket, which is what it would have
        refilled to anyway once idle)."""
        if len(self._sources) <= self.max_sources:
            return
        for key in list(self._sources):
            if len(self._sources) <= self.max_sources:
                break
            if self._sources[key].pending == 0:
                del self._sources[key]

    def sources(self) -> int:
        return len(self._sources)


class RxBudget:
    """Bytes of large frame bodies being received: reserve before reading, release after."""

    def __init__(self, total: int = RX_BUDGET, per_source: int = RX_BUDGET_PER_SOURCE) -> None:
        self.total, self.per_source = total, per_source
        self.used = 0
        self.by_source: dict[str, int] = {}
        self.peak = 0
        self.waits = 0          # reservations that could not be granted at once

    def try_reserve(self, source: str, n: int) -> bool:
        mine = self.by_source.get(source, 0)
        if self.used + n > self.total or mine + n > self.per_source:
            return False
        self.used += n
        self.by_source[source] = mine + n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, source: str, n: int) -> None:
        left = self.by_source.get(source, 0) - n
        if left > 0:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)
        self.used = max(0, self.used - n)

    def status(self) -> dict[str, int]:
        return {"used": self.used, "total": self.total, "per_source": self.per_source, "peak": self.peak,
                "waits": self.waits, "sources": len(self.by_source)}


def write_overflow(queued: int, all_queued: Callable[[], int]) -> str | None:
    """Why a connection with ``queued`` bytes waiting to be sent must be closed, or None.

    Over MAX_WRITE_BUFFER to this peer; or, once this peer's queue is WRITE_CHECKED long
    (a healthy peer's never is), over MAX_WRITE_TOTAL to all peers (``all_queued()``, only
    computed then): the slow peer being written to is the one dropped.
    """
    if queued > MAX_WRITE_BUFFER:
        return f"peer too slow: {queued >> 20} MiB waiting to be sent to it"
    if queued > WRITE_CHECKED and all_queued() > MAX_WRITE_TOTAL:
        return f"peer too slow: {queued >> 20} MiB waiting for it, over {MAX_WRITE_TOTAL >> 20} MiB for all peers"
    return None


@dataclass
class FailureRow:
    source: str
    attempts: int
    reason: str
    first: float
    last: float


class InboundFailures:
    """Failed inbound handshakes per source, newest first, bounded in sources and time."""

    def __init__(self, max_sources: int = FAILURE_SOURCES, window: float = FAILURE_WINDOW_S) -> None:
        self.max_sources, self.window = max_sources, window
        self._rows: OrderedDict[str, FailureRow] = OrderedDict()
        self.total = 0

    def add(self, source: str, reason: str, now: float) -> FailureRow:
        self.total += 1
        row = self._rows.pop(source, None)
        if row is None or now - row.last > self.window:
            row = FailureRow(source, 0, reason, now, now)
        row.attempts += 1
        row.reason, row.last = reason, now
        self._rows[source] = row
        while len(self._rows) > self.max_sources:
            self._rows.popitem(last=False)
        return row

    def rows(self, now: float) -> list[FailureRow]:
        """Sources that failed within the window, most recent first."""
        return [r for r in reversed(self._rows.values()) if now - r.last <= self.window]
