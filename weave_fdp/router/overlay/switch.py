"""The overlay switch: per connection, fastdp when it is usable and healthy, else sleeve.

This module is the one place that decides which overlay carries a connection and
why. Everything else follows the decision:

- the fastdp overlay writes it into the BPF map (per-peer mode: redirect into the
  VXLAN device, or pass the frame to the bridge where the sleeve captures it);
- ``status connections`` shows it (mode and reason come from :meth:`OverlaySwitch.status`);
- the sleeve floods its own frames to the hops the switch put on sleeve.

Decision rules (:meth:`OverlaySwitch.decide`, pure: time is passed in):

1. *Static* reasons put a connection on sleeve whatever its health: this host
   runs no fastdp (``fastdp not running on this host``), the peer did not
   advertise it (``peer has no fastdp``), the connection must be encrypted and
   fastdp cannot seal (``encryption: kernel lacks ESP``; ``--trusted-subnets``
   lifts it), or the fastdp overlay says so (e.g. ``mtu``).
2. A connection on fastdp is put *on hold* when no fastdp heartbeat has come
   back for ``hold_after`` seconds (``fastdp heartbeats lost``): sleeve at once.
3. It *resumes* when heartbeats have come back steadily for ``resume_after``
   seconds (no flapping). The check runs on every tick, forever: a connection
   is never stuck on sleeve once fastdp works again (Weave's long-standing bug).
4. A new connection starts on sleeve (``waiting for fastdp heartbeats``) and
   moves to fastdp with its first heartbeat (no resume delay: nothing was lost).

The first decision for a peer and every change are reported as ``changed`` so
the caller pushes them to fastdp (``FastdpControl.set_mode``): the kernel's mode
always equals the switch's decision. Changes are logged and kept (last 10 per
peer) in the status.

Who calls what: the router runs a :class:`SwitchDriver` beside its overlays (as
Weave's overlay switch wraps its overlays). It ticks the switch every 0.25 s with
:class:`Inputs` gathered from the mesh view and from the fastdp overlay (which
registers itself with :func:`offer_fastdp`) and pushes decisions with
``set_mode``. The overlays read decisions through ``ctx.switch``; no overlay owns
the switch, so it runs the same with or without the sleeve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from weave_fdp.router.tasks import cancel_and_wait

log = logging.getLogger("weave_fdp.overlay.switch")

#: s without a fastdp heartbeat before the hold; with heartbeats every 0.25 s that is
#: six lost in a row (a busy router's event loop must not trip it), and failover
#: completes well within 3 s: hold_after + one tick + the map update.
HOLD_AFTER = 1.5
#: s of steady heartbeats before moving back (well within the 15 s promise; long
#: enough that a flapping path does not bounce traffic between overlays).
RESUME_AFTER = 2.0

R_NO_LOCAL = "fastdp not running on this host"
R_PEER = "peer has no fastdp"
R_ESP = "encryption: kernel lacks ESP"
R_LOST = "fastdp heartbeats lost"
R_WAIT = "waiting for fastdp heartbeats"
R_MTU = "mtu"

FASTDP, SLEEVE = "fastdp", "sleeve"


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

    def floods_by_sleeve(self, peer: str) -> bool:
        """Frames this host floods (broadcast, multicast, unknown unicast) toward ``peer``
        must go by the sleeve (see :func:`flood_overlay`); the sleeve's capture asks this."""

    async def set_dns_fastpath(self, settings: Any, entries: dict[bytes, Any]) -> None:
        """weaveDNS's names the kernel answers (datapath.dns_plan), or off (``settings`` None)."""

    def dns_fastpath_stats(self) -> dict[str, int] | None:
        """The kernel's DNS counters."""


def flood_overlay(mode: str, relays_into_sleeve: bool) -> str:
    """The overlay for frames this host floods to a neighbour on its broadcast tree.

    The connection's mode, except that a neighbour on fastdp which relays our floods
    on into a sleeve connection (it said so, see the fastdp overlay's "floods"
    message) gets them by sleeve: a frame that arrives by fastdp is re-flooded by
    the kernel to fastdp hops only, while one that arrives by sleeve is relayed by
    the sleeve to every hop, so the sleeve must carry them from the origin. Known
    unicast still uses the connection's mode.
    """
    return SLEEVE if mode == SLEEVE or relays_into_sleeve else FASTDP


def offer_fastdp(ctx: Any, control: FastdpControl) -> None:
    """Called by the fastdp overlay in its ``start(ctx)``: lets the switch steer it."""
    ctx.fastdp_control = control


def fastdp_of(ctx: Any) -> FastdpControl | None:
    """The fastdp overlay's control on this router, or None (``--no-fastdp``, failed to start)."""
    return getattr(ctx, "fastdp_control", None)


def switch_of(ctx: Any) -> "SwitchDriver | None":
    """The router's switch driver, or None (a test context without one)."""
    return getattr(ctx, "switch", None)


@dataclass(frozen=True)
class Inputs:
    """What the switch knows about one connection at one instant."""

    local_fastdp: bool            # this host runs fastdp
    peer_fastdp: bool             # the peer advertised fastdp in its features
    encrypted: bool               # --password and the peer is not in --trusted-subnets
    can_encrypt: bool             # fastdp can seal (ESP); never on this kernel
    unusable: str | None          # fastdp's own static reason (e.g. "mtu")
    last_heartbeat: float | None  # monotonic time of the last fastdp heartbeat back from the peer


@dataclass
class ConnState:
    """The switch's memory of one connection."""

    mode: str | None = None               # None until the first decision
    reason: str | None = R_WAIT
    since: float = 0.0                    # when the current mode began
    healthy_since: float | None = None    # start of the current run of steady heartbeats
    history: deque = field(default_factory=lambda: deque(maxlen=10))


def static_reason(inp: Inputs) -> str | None:
    """Why fastdp cannot carry this connection whatever its health, or None."""
    if not inp.local_fastdp:
        return R_NO_LOCAL
    if not inp.peer_fastdp:
        return R_PEER
    if inp.encrypted and not inp.can_encrypt:
        return R_ESP
    return inp.unusable


class OverlaySwitch:
    """Decides and remembers the mode of every connection (see the module docstring)."""

    def __init__(self, hold_after: float = HOLD_AFTER, resume_after: float = RESUME_AFTER) -> None:
        self.hold_after = hold_after
        self.resume_after = resume_after
        self.conns: dict[str, ConnState] = {}

    def decide(self, peer: str, inp: Inputs, now: float | None = None) -> tuple[str, str | None, bool]:
        """Update ``peer``'s mode; returns (mode, reason, changed).

        ``changed`` is True on the first decision for ``peer`` and on every change of
        mode: the caller then pushes ``mode`` to fastdp.
        """
        now = time.monotonic() if now is None else now
        st = self.conns.get(peer)
        if st is None:
            st = self.conns[peer] = ConnState(since=now)
        hb = inp.last_heartbeat
        alive = hb is not None and now - hb < self.hold_after
        if not alive:
            st.healthy_since = None
        elif st.healthy_since is None:
            # on sleeve, the run of good heartbeats began with the one just seen
            st.healthy_since = hb if st.mode != FASTDP else now
        mode, reason = self._rule(st, inp, alive, now)
        first, changed = st.mode is None, mode != st.mode
        if first:
            log.info("connection to %s: %s%s", peer, mode, f" ({reason})" if reason else "")
        elif changed:
            log.warning("connection to %s: %s -> %s%s after %.1f s", peer, st.mode, mode,
                        f" ({reason})" if reason else "", now - st.since)
            st.history.append({"at": round(time.time(), 3), "from": st.mode, "to": mode, "reason": reason,
                               "after_s": round(now - st.since, 3)})
        elif reason != st.reason and reason != R_WAIT:
            log.info("connection to %s: %s (%s)", peer, mode, reason)
        if changed:
            st.mode, st.since = mode, now
        st.reason = reason
        return mode, reason, changed

    def _rule(self, st: ConnState, inp: Inputs, alive: bool, now: float) -> tuple[str, str | None]:
        """The rules 1-4 of the module docstring, in order."""
        static = static_reason(inp)
        if static:
            return SLEEVE, static
        if st.mode == FASTDP:
            return (FASTDP, None) if alive else (SLEEVE, R_LOST)
        if not alive:
            return SLEEVE, R_LOST if st.reason == R_LOST else R_WAIT
        wait = self.resume_after if st.reason == R_LOST else 0.0
        assert st.healthy_since is not None
        if now - st.healthy_since >= wait:
            return FASTDP, None
        return SLEEVE, R_LOST

    def forget(self, peer: str) -> None:
        """The connection is gone: its next incarnation starts from scratch."""
        self.conns.pop(peer, None)

    def mode(self, peer: str) -> str:
        """The decided mode of ``peer``'s connection ("sleeve" until decided)."""
        st = self.conns.get(peer)
        return st.mode if st is not None and st.mode is not None else SLEEVE

    def status(self, peer: str) -> dict[str, Any]:
        """{"mode", "reason", "since_s", "history"}: what ``status connections`` shows."""
        st = self.conns.get(peer)
        if st is None or st.mode is None:
            return {"mode": None, "reason": "not decided yet", "history": []}
        return {"mode": st.mode, "reason": st.reason, "since_s": round(time.monotonic() - st.since, 1),
                "history": list(st.history)}


#: s between two decisions of the driver
TICK = 0.25


def in_subnets(ip: str, subnets: list[str] | tuple[str, ...]) -> bool:
    """Whether ``ip`` lies in one of ``subnets`` (``--trusted-subnets``); False for garbage."""
    try:
        addr = ipaddress.ip_address(ip)
        return any(addr in ipaddress.ip_network(n, strict=False) for n in subnets)
    except ValueError:
        return False


class SwitchDriver:
    """Runs the :class:`OverlaySwitch` for the router: inputs in, decisions out.

    Gathers :class:`Inputs` per established connection from the latest mesh view
    and the fastdp control found on ``ctx`` (read on every tick: fastdp may offer
    itself after the driver starts, or never), decides, and pushes every change to
    fastdp. Also answers what the switch decided for status and for the sleeve.
    """

    def __init__(self, ctx: Any, switch: OverlaySwitch | None = None) -> None:
        self.ctx = ctx
        self.switch = switch or OverlaySwitch()
        config = getattr(ctx, "config", None)
        self.password = bool(getattr(config, "password", None))
        self.trusted = tuple(getattr(config, "trusted_subnets", None) or ())
        self.view: Any = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Tick on the router's loop and add ``report["switch"]``."""
        self._task = self.ctx.loop.create_task(self._loop())
        self.ctx.add_report_section("switch", self.report)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def on_mesh(self, view: Any) -> None:
        """A new mesh view: connections that went away are forgotten (restart from scratch)."""
        self.view = view
        for peer in list(self.switch.conns):
            if peer not in view.connections:
                self.switch.forget(peer)

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("overlay switch tick failed")
            await asyncio.sleep(TICK)

    def inputs(self, conn: Any, fd: FastdpControl | None) -> Inputs:
        """What the switch gets to know about one direct connection now."""
        return Inputs(local_fastdp=fd is not None, peer_fastdp=FASTDP in conn.overlays,
                      encrypted=self.password and not in_subnets(conn.remote_ip, self.trusted),
                      can_encrypt=bool(getattr(fd, "supports_encryption", False)),
                      unusable=fd.unusable_reason(conn.peer) if fd else None,
                      last_heartbeat=fd.last_heartbeat(conn.peer) if fd else None)

    def tick(self, now: float | None = None) -> None:
        """Decide every established connection; push changes to fastdp."""
        view = self.view
        if view is None:
            return
        fd = fastdp_of(self.ctx)
        for peer, conn in view.connections.items():
            if not conn.established:
                continue
            mode, _reason, changed = self.switch.decide(peer, self.inputs(conn, fd), now)
            if changed and fd is not None:
                fd.set_mode(peer, mode)

    def mode(self, peer: str) -> str:
        return self.switch.mode(peer)

    def status(self, peer: str) -> dict[str, Any]:
        return self.switch.status(peer)

    def report(self) -> dict[str, Any]:
        """``report["switch"]``: the decision, reason and history of every connection."""
        return {p: self.switch.status(p) for p in sorted(self.switch.conns)}
