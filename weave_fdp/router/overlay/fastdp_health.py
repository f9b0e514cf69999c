"""fastdp heartbeat health, per peer: pure bookkeeping, time passed in.

The fastdp overlay sends a ping over the VXLAN path to every heartbeat target
each round and feeds what happens here (sent, send error, pong). From that this
module answers the questions the overlay switch and ``status`` ask:

- *healthy*: a pong came back within ``HEALTHY_WITHIN`` seconds (status and the
  receive rule; the switch applies its own hold/resume timing to ``last_pong``);
- *unusable*: a static reason from the heartbeats alone: "mtu" while pings of the
  fastdp MTU cannot leave (EMSGSIZE), or a send error while no pong ever came;
- *why not fastdp*: the line ``status connections`` shows for a peer the switch
  has not put on fastdp.

The watchdog's repairs back off here too (:class:`RepairBackoff`): each failed
repair reloads the programs, so a repair that keeps failing is retried ever less often.
"""

from __future__ import annotations

import errno
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from weave_fdp.router.overlay.switch import R_MTU

HEALTHY_WITHIN = 1.5   # s: a peer whose last pong is older is unhealthy (status only; the switch decides)
REPAIR_FIRST_WAIT = 2.0    # s before the attempt after a failed repair
REPAIR_BACKOFF_MAX = 30.0  # s between repair attempts that keep failing (each reloads programs)


@dataclass
class PeerHealth:
    """Heartbeats to and from one peer."""

    seq: int = 0
    last_pong: float | None = None   # monotonic time the last pong arrived
    rtt_ms: float | None = None
    sent: int = 0
    received: int = 0
    error: str | None = None         # the last send's error, None once a send works


def send_error(err: int | None, strerror: str | None) -> str:
    """The reason a failed heartbeat send gives: EMSGSIZE means the kernel knows a path
    MTU below our heartbeat (an ICMP came back), so the reason is the switch's "mtu"."""
    return R_MTU if err == errno.EMSGSIZE else f"heartbeat send failed: {strerror}"


class HeartbeatHealth:
    """The health of every heartbeat target (the fastdp overlay holds one)."""

    def __init__(self, healthy_within: float = HEALTHY_WITHIN) -> None:
        self.healthy_within = healthy_within
        self.peers: dict[str, PeerHealth] = {}

    def retarget(self, targets: Collection[str]) -> None:
        """Forget peers that are no longer heartbeat targets."""
        for peer in [p for p in self.peers if p not in targets]:
            del self.peers[peer]

    def next_ping(self, peer: str) -> int:
        """The sequence number of the next ping to ``peer``."""
        h = self.peers.setdefault(peer, PeerHealth())
        h.seq += 1
        return h.seq

    def sent(self, peer: str) -> None:
        h = self.peers.setdefault(peer, PeerHealth())
        h.sent += 1
        h.error = None

    def send_failed(self, peer: str, err: int | None, strerror: str | None) -> None:
        self.peers.setdefault(peer, PeerHealth()).error = send_error(err, strerror)

    def pong(self, peer: str, now: float, rtt_ms: float) -> None:
        h = self.peers.setdefault(peer, PeerHealth())
        h.last_pong = now
        h.received += 1
        h.rtt_ms = round(rtt_ms, 3)

    def last_pong(self, peer: str) -> float | None:
        h = self.peers.get(peer)
        return h.last_pong if h is not None else None

    def healthy(self, peer: str, now: float) -> bool:
        h = self.peers.get(peer)
        return bool(h and h.last_pong is not None and now - h.last_pong < self.healthy_within)

    def unusable(self, peer: str) -> str | None:
        """A static reason from the heartbeats: "mtu" whatever else came back; any other
        send error only while no pong ever came (a transient error after pongs is health's)."""
        h = self.peers.get(peer)
        if h is None or not h.error:
            return None
        return h.error if h.error == R_MTU or h.last_pong is None else None

    def why_not_fastdp(self, peer: str, now: float, fatal: str | None) -> str:
        """Why a connection the switch has not put on fastdp is not on it (for status)."""
        h = self.peers.get(peer)
        if fatal:
            return fatal
        if h is not None and h.error:
            return h.error
        if self.healthy(peer, now):
            return "heartbeats answered; the switch has not moved back yet"
        return "fastdp heartbeats lost" if h and h.last_pong else "waiting for fastdp heartbeats"

    def status(self, now: float, modes: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {p: {"healthy": self.healthy(p, now), "mode": modes.get(p), "rtt_ms": h.rtt_ms,
                    "sent": h.sent, "received": h.received} for p, h in self.peers.items()}


class RepairBackoff:
    """When the watchdog may try its next repair: at once, and after a failure 2 s, 4 s, ... up to
    ``REPAIR_BACKOFF_MAX``; a repair that works starts the series again."""

    def __init__(self) -> None:
        self.next_at = 0.0            # monotonic time before which no repair is tried
        self.wait = REPAIR_FIRST_WAIT

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> None:
        self.next_at = now + self.wait
        self.wait = min(self.wait * 2, REPAIR_BACKOFF_MAX)

    def succeeded(self) -> None:
        self.next_at, self.wait = 0.0, REPAIR_FIRST_WAIT
