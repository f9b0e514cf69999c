"""Overlay "fastdp": the in-kernel datapath driven by the mesh, plus its heartbeats.

Starts the host's fastdp (bridge, VXLAN device, programs, pinned maps), turns
every MeshView into a plan, lets the overlay switch steer each connection
(``set_mode``), sends MTU-sized heartbeats over the VXLAN path to every direct
peer that has fastdp, registers the container ops (attach/detach/ps) and fills
``report["datapath"]``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
import socket
import time
from typing import Any

from weave_fdp.datapath.fastdp import heartbeat as hbm
from weave_fdp.router.overlay.base import MeshView, RouterContext

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 0.5   # s between pings to each peer
HEALTHY_WITHIN = 1.5       # s: a peer whose last pong is older is unhealthy


class PeerHealth:
    def __init__(self) -> None:
        self.seq = 0
        self.last_pong: float | None = None   # time.monotonic()
        self.rtt_ms: float | None = None
        self.sent = 0
        self.received = 0
        self.error: str | None = None


class FastdpOverlay:
    """Overlay "fastdp" (implements base.Overlay and switch.FastdpControl)."""

    name = "fastdp"
    supports_encryption = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self.host: Any = None
        self.ctx: RouterContext | None = None
        self.view: MeshView | None = None
        self.modes: dict[str, str] = {}       # peer -> mode set by the overlay switch
        self.health: dict[str, PeerHealth] = {}
        self._tx: socket.socket | None = None
        self._rx: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        # pyroute2's sync API cannot run inside the router's event loop, and datapath
        # changes must not interleave: one worker thread does them all, in order.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastdp")

    async def run(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run a datapath call on the fastdp worker thread."""
        assert self.ctx is not None
        return await self.ctx.loop.run_in_executor(self._worker, lambda: fn(*args, **kw))

    # ------------------------------------------------------------ lifecycle
    async def start(self, ctx: RouterContext) -> None:
        from weave_fdp.datapath.fastdp.host import HostDatapath
        from weave_fdp.datapath.fastdp.pins import host_pin_dir
        from weave_fdp.plumbing.vxlan import VXLAN_IFNAME
        from weave_fdp.router import containers
        from weave_fdp.router.overlay.switch import offer_fastdp

        self.ctx = ctx
        self.host = HostDatapath(pin_dir=await self.run(host_pin_dir))
        await self.run(self.host.start)
        self._tx = hbm.sender_socket()
        self._rx = hbm.receiver_socket(VXLAN_IFNAME)
        ctx.loop.add_reader(self._rx.fileno(), self._on_heartbeat)
        self._task = ctx.loop.create_task(self._heartbeat_loop())
        offer_fastdp(ctx, self)
        containers.register(ctx.api, self.host, ctx.state_dir, self.run)
        ctx.add_report_section("datapath", self.host.report)
        log.info("fastdp ready: MTU %s, pins %s", self.host.mtu, self.host.pin_dir)

    async def stop(self) -> None:
        """Stop heartbeats and let go of the programs: they stay attached and keep forwarding."""
        if self._task:
            self._task.cancel()
        if self._rx is not None and self.ctx is not None:
            self.ctx.loop.remove_reader(self._rx.fileno())
            self._rx.close()
        if self._tx is not None:
            self._tx.close()
        if self.host is not None:
            await self.run(self.host.stop)
        self._worker.shutdown(wait=False)

    # ------------------------------------------------------------ mesh -> plan
    def on_mesh(self, view: MeshView) -> None:
        self.view = view
        for peer in list(self.health):
            if peer not in view.connections:
                self.health.pop(peer, None)
                self.modes.pop(peer, None)
        self._apply()

    def _apply(self) -> None:
        """Schedule a re-plan on the worker (never blocks the event loop)."""
        if self.ctx is not None and self.host is not None:
            self.ctx.loop.run_in_executor(self._worker, self._apply_now)

    def _apply_now(self) -> None:
        from weave_fdp.datapath.fastdp.host import MeshInputs

        view = self.view
        if view is None or self.host is None or self.host.dp is None:
            return
        conns = {p: c for p, c in view.connections.items() if c.established}
        mesh = MeshInputs(
            local=view.local.name,
            short_ids={n: p.short_id for n, p in view.peers.items()},
            unicast={d: h for d, h in view.unicast.items() if h in conns},
            broadcast={s: [h for h in hs if h in conns] for s, hs in view.broadcast.items()},
            hop_ips={p: c.remote_ip for p, c in conns.items()},
            modes={p: self._mode(p, "fastdp" in c.overlays) for p, c in conns.items()})
        try:
            self.host.set_mesh(mesh)
        except Exception:
            log.exception("fastdp: cannot apply the mesh to the datapath")

    def _mode(self, peer: str, peer_has_fastdp: bool) -> str:
        if not peer_has_fastdp:
            return "sleeve"
        if peer in self.modes:
            return self.modes[peer]
        # The switch only calls set_mode on a change from its initial "sleeve": until
        # then, fastdp once heartbeats answer, never when the connection must be
        # encrypted (fastdp cannot seal frames).
        if getattr(self.config, "password", None):
            return "sleeve"
        return "fastdp" if self.healthy(peer) else "sleeve"

    # ------------------------------------------------------------ FastdpControl
    def unusable_reason(self, peer: str) -> str | None:
        h = self.health.get(peer)
        return h.error if h and h.error and h.last_pong is None else None

    def last_heartbeat(self, peer: str) -> float | None:
        h = self.health.get(peer)
        return h.last_pong if h else None

    def set_mode(self, peer: str, mode: str) -> None:
        if self.modes.get(peer) != mode:
            log.info("fastdp: connection to %s now %s", peer, mode)
        self.modes[peer] = mode
        self._apply()

    def mtu(self, peer: str) -> int | None:
        return self.host.mtu if self.host else None

    def healthy(self, peer: str) -> bool:
        h = self.health.get(peer)
        return bool(h and h.last_pong is not None and time.monotonic() - h.last_pong < HEALTHY_WITHIN)

    # ------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                self._send_pings()
            except Exception:
                log.exception("fastdp heartbeat round failed")
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _send_pings(self) -> None:
        view = self.view
        if view is None or self._tx is None or self.host is None or self.host.mtu is None:
            return
        me = view.local.short_id
        now_ns = time.monotonic_ns()
        for peer, c in view.connections.items():
            if not c.established or "fastdp" not in c.overlays or peer not in view.peers:
                continue
            h = self.health.setdefault(peer, PeerHealth())
            h.seq += 1
            dgram = hbm.encode_datagram(hbm.Heartbeat(hbm.PING, me, h.seq, now_ns), me,
                                        view.peers[peer].short_id, self.host.mtu)
            try:
                self._tx.sendto(dgram, (c.remote_ip, hbm.abi.VXLAN_PORT))
                h.sent += 1
                h.error = None
            except OSError as exc:
                h.error = f"heartbeat send failed: {exc.strerror}"
                if self.healthy(peer) is False and h.last_pong is None:
                    log.debug("fastdp heartbeat to %s: %s", peer, exc)

    def _on_heartbeat(self) -> None:
        assert self._rx is not None
        for _ in range(64):
            try:
                frame = self._rx.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            hb = hbm.decode_frame(frame)
            view = self.view
            if hb is None or view is None:
                continue
            peer = next((n for n, p in view.peers.items() if p.short_id == hb.src and n != view.local.name), None)
            if peer is None or peer not in view.connections:
                continue
            if hb.kind == hbm.PING:
                self._pong(peer, hb)
            else:
                h = self.health.setdefault(peer, PeerHealth())
                h.last_pong = time.monotonic()
                h.received += 1
                h.rtt_ms = round((time.monotonic_ns() - hb.echo_ns) / 1e6, 3)
                if self.modes.get(peer) is None:
                    self._apply()

    def _pong(self, peer: str, ping: hbm.Heartbeat) -> None:
        view, c = self.view, self.view.connections.get(peer) if self.view else None
        if view is None or c is None or self._tx is None or self.host is None:
            return
        me = view.local.short_id
        dgram = hbm.encode_datagram(hbm.Heartbeat(hbm.PONG, me, ping.seq, ping.echo_ns), me, ping.src,
                                    self.host.mtu)
        try:
            self._tx.sendto(dgram, (c.remote_ip, hbm.abi.VXLAN_PORT))
        except OSError:
            pass

    # ------------------------------------------------------------ status
    def connection_status(self, peer: str) -> dict[str, Any]:
        h = self.health.get(peer)
        rtt = h.rtt_ms if h else None
        if self.healthy(peer):
            mode = self.modes.get(peer, "fastdp")
            return {"mode": "fastdp" if mode == "fastdp" else None,
                    "reason": None if mode == "fastdp" else f"switch chose {mode}",
                    "mtu": self.mtu(peer), "rtt_ms": rtt}
        why = (h.error if h and h.error else "fastdp heartbeats lost" if h and h.last_pong
               else "waiting for fastdp heartbeats")
        return {"mode": None, "reason": why, "mtu": self.mtu(peer), "rtt_ms": None}

    def status(self) -> dict[str, Any]:
        return {"mtu": self.host.mtu if self.host else None,
                "pin_dir": str(self.host.pin_dir) if self.host else None,
                "peers": {p: {"healthy": self.healthy(p), "mode": self.modes.get(p), "rtt_ms": h.rtt_ms,
                              "sent": h.sent, "received": h.received} for p, h in self.health.items()}}


def make_overlay(config: Any) -> FastdpOverlay | None:
    """The router's factory hook (see overlay.OVERLAY_FACTORIES)."""
    return FastdpOverlay(config)
