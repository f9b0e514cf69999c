"""Path MTU discovery per sleeve connection. Pure state machine, driven by the forwarder.

Each round sends one DF probe per candidate size (UDP payload bytes); the peer
acks the size it received. The path MTU is the largest size acked in the latest
round that got any ack, so it rises when the path grows and falls when it
shrinks. Until the first ack we assume the local link's MTU (optimistic: a
conservative guess would push containers' PMTU down for ten minutes).

Each round also sends one *big* probe (``BIG_PAYLOAD`` bytes, DF clear): when it
is acked, IP fragments pass on this path in that direction and the sender may use
datagrams of up to ``BIG_PAYLOAD`` bytes, which the kernels fragment and reassemble
(one seal, one syscall per GSO super-frame instead of ~45). A round whose small
probes are acked but whose big probe is not turns big datagrams off again (a
firewall that drops fragments); ``big=False`` never tries.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from weave_fdp.datapath.sleeve import wire

LINK_MTUS = (65535, 9000, 4000, 1500, 1492, 1480, 1460, 1450, 1420, 1400, 1380, 1280, 1024, 576)
FAST_INTERVAL = 1.0      # s between rounds until the path is known
SLOW_INTERVAL = 10.0     # s between rounds afterwards
LOST_ROUNDS = 3          # rounds without any ack before we call probes lost
BIG_PAYLOAD = 65507      # largest IPv4 UDP payload: 65535 - 20 (IP) - 8 (UDP)


@dataclass
class _Round:
    sent_at: float
    ids: dict[int, int] = field(default_factory=dict)   # probe id -> size
    best: int = 0
    big_id: int | None = None
    big_acked: bool = False


class PmtuProber:
    """Probe schedule and result for one connection."""

    _ids = itertools.count(1)

    def __init__(self, link_mtu: int, *, big: bool = True) -> None:
        self.link_mtu = link_mtu
        self.try_big = big
        self.big_ok = False                   # fragmented big datagrams reach the peer
        self.candidates = sorted({m - wire.IP_UDP_OVERHEAD for m in LINK_MTUS if m <= link_mtu}
                                 | {link_mtu - wire.IP_UDP_OVERHEAD}, reverse=True)
        self.assumed = link_mtu - wire.IP_UDP_OVERHEAD
        self.pmtu: int | None = None          # discovered UDP payload bytes
        self.unanswered = 0                   # consecutive rounds with no ack
        self.lost_reported = False
        self._round: _Round | None = None
        self._next = 0.0

    @property
    def payload(self) -> int:
        """UDP payload bytes usable now (discovered, else assumed)."""
        return self.pmtu if self.pmtu is not None else self.assumed

    @property
    def settled(self) -> bool:
        return self.pmtu is not None

    def due(self, now: float | None = None) -> list[tuple[int, int, bool]]:
        """Close the current round if its time is up; (id, size, df) probes to send now."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return []
        self._finish_round()
        r = self._round = _Round(now)
        for size in self.candidates:
            r.ids[next(self._ids)] = size
        out = [(pid, size, True) for pid, size in r.ids.items()]
        if self.try_big:
            r.big_id = next(self._ids)
            out.append((r.big_id, BIG_PAYLOAD, False))
        self._next = now + (SLOW_INTERVAL if self.settled else FAST_INTERVAL)
        return out

    def on_ack(self, probe_id: int, size: int) -> bool:
        """Record an ack; True when it was for a probe of the current round."""
        r = self._round
        if r is not None and probe_id == r.big_id and r.big_id is not None:
            if size != BIG_PAYLOAD:
                return False
            r.big_acked = True
            self.big_ok = True
            return True
        if r is None or r.ids.get(probe_id) != size:
            return False
        r.best = max(r.best, size)
        self.unanswered = 0
        if self.pmtu is None or size > self.pmtu:
            self.pmtu = size
        return True

    def _finish_round(self) -> None:
        r = self._round
        if r is None:
            return
        if r.best:
            self.pmtu = r.best
            if r.big_id is not None and not r.big_acked:
                self.big_ok = False      # small probes pass, fragments do not (any more)
        else:
            self.unanswered += 1

    @property
    def lost(self) -> bool:
        """Probes have gone unanswered for several rounds."""
        return self.unanswered >= LOST_ROUNDS
