"""The overlay switch: per connection, fastdp when it is usable and healthy, else sleeve.

Pure decision logic (time is passed in), plus the small interface the fastdp overlay
offers to it. Rules:

- fastdp is *unusable* for a connection for a static reason: this host has no
  fastdp, the peer did not advertise it ("peer has no fastdp"), the connection is
  encrypted and fastdp cannot encrypt ("encryption: kernel lacks ESP"), or the
  fastdp overlay says so (e.g. "mtu").
- fastdp is put *on hold* when its heartbeats stop for ``hold_after`` seconds
  ("fastdp heartbeats lost"); the connection moves to sleeve at once.
- it *resumes* when heartbeats have come back steadily for ``resume_after``
  seconds (no flapping, and never stuck: the check runs on every tick, forever).

Every change is logged and kept in a short history per peer (shown by ``status``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("weave_fdp.overlay.switch")

HOLD_AFTER = 1.5        # s without a fastdp heartbeat -> hold (moves to sleeve well within 3 s)
RESUME_AFTER = 2.0      # s of steady heartbeats before moving back (well within 15 s)

R_NO_LOCAL = "fastdp not running on this host"
R_PEER = "peer has no fastdp"
R_ESP = "encryption: kernel lacks ESP"
R_LOST = "fastdp heartbeats lost"
R_WAIT = "waiting for fastdp heartbeats"


@runtime_checkable
class FastdpControl(Protocol):
    """What the fastdp overlay offers the switch (register it with :func:`offer_fastdp`)."""

    supports_encryption: bool   # True only when it can seal (IPsec ESP) connections

    def unusable_reason(self, peer: str) -> str | None:
        """A static reason fastdp cannot carry ``peer`` (e.g. "mtu"), or None."""

    def last_heartbeat(self, peer: str) -> float | None:
        """time.monotonic() of the last fastdp heartbeat received from ``peer`` (None: never)."""

    def set_mode(self, peer: str, mode: str) -> None:
        """Steer ``peer``'s traffic: "fastdp" (redirect to VXLAN) or "sleeve" (pass to bridge)."""

    def mtu(self, peer: str) -> int | None:
        """The fastdp MTU towards ``peer``."""


def offer_fastdp(ctx: Any, control: FastdpControl) -> None:
    """Called by the fastdp overlay in its ``start(ctx)``: lets the switch steer it."""
    ctx.fastdp_control = control


def fastdp_of(ctx: Any) -> FastdpControl | None:
    return getattr(ctx, "fastdp_control", None)


@dataclass
class ConnState:
    mode: str = "sleeve"
    reason: str | None = R_WAIT
    since: float = 0.0
    healthy_since: float | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=10))


@dataclass(frozen=True)
class Inputs:
    """What the switch knows about one connection at one instant."""

    local_fastdp: bool
    peer_fastdp: bool
    encrypted: bool
    can_encrypt: bool
    unusable: str | None
    last_heartbeat: float | None


class OverlaySwitch:
    """Decides and remembers the mode of every connection."""

    def __init__(self, hold_after: float = HOLD_AFTER, resume_after: float = RESUME_AFTER) -> None:
        self.hold_after = hold_after
        self.resume_after = resume_after
        self.conns: dict[str, ConnState] = {}

    def decide(self, peer: str, inp: Inputs, now: float | None = None) -> tuple[str, str | None, bool]:
        """Update ``peer``'s mode; returns (mode, reason, changed)."""
        now = time.monotonic() if now is None else now
        st = self.conns.get(peer)
        if st is None:
            st = self.conns[peer] = ConnState(since=now)
        static = (R_NO_LOCAL if not inp.local_fastdp else R_PEER if not inp.peer_fastdp
                  else R_ESP if inp.encrypted and not inp.can_encrypt else inp.unusable)
        hb = inp.last_heartbeat
        alive = hb is not None and now - hb < self.hold_after
        if not alive:
            st.healthy_since = None
        elif st.healthy_since is None:
            st.healthy_since = hb if st.mode != "fastdp" else now
        if static:
            mode, reason = "sleeve", static
        elif st.mode == "fastdp":
            mode, reason = ("fastdp", None) if alive else ("sleeve", R_LOST)
        elif alive and now - st.healthy_since >= (self.resume_after if st.reason == R_LOST else 0):
            mode, reason = "fastdp", None
        else:
            mode, reason = "sleeve", st.reason if st.reason in (R_LOST, R_WAIT) else R_WAIT
        changed = mode != st.mode
        if changed:
            log.warning("connection to %s: %s -> %s%s", peer, st.mode, mode, f" ({reason})" if reason else "")
            st.history.append({"at": time.time(), "from": st.mode, "to": mode, "reason": reason,
                               "after_s": round(now - st.since, 3)})
            st.mode, st.since = mode, now
        elif reason != st.reason and reason not in (R_WAIT,):
            log.info("connection to %s: %s (%s)", peer, mode, reason)
        st.reason = reason
        return mode, reason, changed

    def forget(self, peer: str) -> None:
        self.conns.pop(peer, None)

    def mode(self, peer: str) -> str:
        st = self.conns.get(peer)
        return st.mode if st else "sleeve"

    def status(self, peer: str) -> dict[str, Any]:
        st = self.conns.get(peer)
        if st is None:
            return {"mode": None, "reason": "not decided yet", "history": []}
        return {"mode": st.mode, "reason": st.reason, "history": list(st.history)}
