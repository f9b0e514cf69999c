"""Overlay "fastdp": the in-kernel datapath driven by the mesh, plus its heartbeats.

Starts the host's fastdp (bridge, VXLAN device, programs, pinned maps), turns
every MeshView into a plan, lets the overlay switch steer each connection
(``set_mode``), sends MTU-sized heartbeats over the VXLAN path to every direct
peer that has fastdp, registers the container ops (attach/detach/ps) and fills
``report["datapath"]``.

This is the I/O shell (sockets, the worker thread, the event loop); the rules it
follows are pure and tested alone: heartbeat health in ``fastdp_health``, what
stays in the kernel while the control plane blinks in ``fastdp_grace``, floods
across overlays in ``fastdp_floods``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from weave_fdp.datapath.fastdp import heartbeat as hbm
from weave_fdp.errors import FdpError
from weave_fdp.router.overlay import fastdp_floods as floods
from weave_fdp.router.overlay.base import MeshView, RouterContext
from weave_fdp.router.overlay.esp_fastdp import EspPeers
from weave_fdp.router.overlay.fastdp_grace import LostConnections, StartupGrace, accepts_fastdp, mode_for
from weave_fdp.router.overlay.fastdp_health import HeartbeatHealth, PeerHealth, RepairBackoff
from weave_fdp.router.overlay.switch import flood_overlay, in_subnets

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 0.25  # s between pings to each peer (the switch holds after switch.HOLD_AFTER without one)
WATCH_EVERY = 8            # heartbeat rounds (2 s) between checks that the datapath is whole


def sleeve_carries_all(password: bool, esp: bool, trusted: tuple[str, ...]) -> bool:
    """Every connection of this host will be on the sleeve although fastdp runs: encrypted
    (``--password``), no ESP in this kernel to seal fastdp, and no ``--trusted-subnets`` that
    could let some peers use plain fastdp. Then containers get the sleeve's ``gso_max_size``."""
    return password and not esp and not trusted


class FastdpOverlay:
    """Overlay "fastdp" (implements base.Overlay and switch.FastdpControl)."""

    name = "fastdp"
    supports_encryption = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self.host: Any = None
        self.ctx: RouterContext | None = None
        self.view: MeshView | None = None
        self.modes: dict[str, str] = {}       # peer -> the overlay switch's decision (set_mode)
        self.heartbeats = HeartbeatHealth()
        self._tx: socket.socket | None = None
        self._rx: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        # pyroute2's sync API cannot run inside the router's event loop, and datapath
        # changes must not interleave: one worker thread does them all, in order.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastdp")
        # The kernel keeps forwarding while the control plane blinks (fastdp_grace): the
        # last inputs of a lost connection stay, and after a restart the maps found in
        # the kernel stay until the mesh is back.
        self.lost = LostConnections()
        self.startup = StartupGrace(started=time.monotonic())
        self._rx_applied: frozenset[str] = frozenset()   # peers whose frames the maps accept on fastdp
        # "floods" messages: sources whose floods, reaching that neighbour, must go on by sleeve
        self.floods = floods.FloodBook()
        # watchdog: what was found missing, repairs made, and why fastdp is unusable
        # when a repair failed (the switch then puts every connection on sleeve)
        self.fatal: str | None = None
        self.aged_macs = 0                     # learned MACs removed by ageing since start
        self.repairs = 0
        self.last_damage: list[str] = []
        self.repair_backoff = RepairBackoff()
        self.esp = EspPeers(port=hbm.abi.VXLAN_PORT)   # encrypted fastdp (IPsec ESP)
        # weaveDNS's last word to the kernel (settings, entries): a repair restarts the
        # datapath with its answers off and its names gone, so it is said again after one
        self._dns: tuple[Any, dict[bytes, Any]] | None = None

    async def run(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run a datapath call on the fastdp worker thread."""
        assert self.ctx is not None
        return await self.ctx.loop.run_in_executor(self._worker, lambda: fn(*args, **kw))

    # ------------------------------------------------------------ lifecycle
    async def start(self, ctx: RouterContext) -> None:
        from weave_fdp.datapath.fastdp.host import HostDatapath
        from weave_fdp.datapath.fastdp.pins import host_pin_dir
        from weave_fdp.router import containers
        from weave_fdp.router.overlay.switch import offer_fastdp

        self.ctx = ctx
        self.host = HostDatapath(pin_dir=await self.run(host_pin_dir), mtu=getattr(ctx.config, "mtu", None))
        await self.run(self.host.start)
        self.startup.boot_fastdp = await self.run(self._fastdp_peers_in_maps)
        if getattr(self.config, "password", None):
            self.supports_encryption = await self.run(self.esp.check_kernel)
        if sleeve_carries_all(bool(getattr(self.config, "password", None)), self.supports_encryption,
                              tuple(getattr(self.config, "trusted_subnets", None) or ())):
            self.host.container_gso_max_size = self.host.sleeve_gso_max_size()
        self._tx = hbm.sender_socket()
        self._open_heartbeats()
        self._task = ctx.loop.create_task(self._heartbeat_loop())
        offer_fastdp(ctx, self)
        recs = containers.register(ctx.api, self.host, ctx.state_dir, self.run, ipam=ctx.ipam,
                                   listeners=ctx.container_listeners)
        # containers attached by a router whose maps had no port addresses (an older version)
        await self.run(self.host.restore_port_addresses,
                       {ifn: list(rec.get("cidrs") or []) for ifn, rec in recs.attached.items()})
        ctx.add_report_section("datapath", self.host.report)
        log.info("fastdp ready: MTU %s, pins %s", self.host.mtu, self.host.pin_dir)

    def _open_heartbeats(self) -> None:
        """(Re)open the heartbeat receiver: it is bound to the VXLAN device, so a new
        device (after a repair) needs a new socket. Runs on the event loop."""
        from weave_fdp.datapath.fastdp.loader import VXLAN_IFNAME

        assert self.ctx is not None
        if self._rx is not None:
            self.ctx.loop.remove_reader(self._rx.fileno())
            self._rx.close()
        self._rx = hbm.receiver_socket(VXLAN_IFNAME)
        self.ctx.loop.add_reader(self._rx.fileno(), self._on_heartbeat)

    async def stop(self) -> None:
        """Stop heartbeats and let go of the programs: they stay attached and keep forwarding."""
        if self._task:
            self._task.cancel()
        if self._rx is not None and self.ctx is not None:
            self.ctx.loop.remove_reader(self._rx.fileno())
            self._rx.close()
        if self._tx is not None:
            self._tx.close()
        if self.esp.installed and self.host is not None:
            # no xfrm without a router: those peers' frames are then not sent at all
            # rather than sent in the clear (the pinned datapath keeps the rest going)
            for peer in self.esp.installed:
                self.modes[peer] = "sleeve"
            await self.run(self._apply_now)
        await self.run(self.esp.flush)
        if self.host is not None:
            # the host's own port is the router's: without a router to keep its addresses
            # in step (expose/hide), the host leaves fastdp; the containers' ports stay
            try:
                await self.run(self.host.release_host_port)
            except Exception as exc:
                log.warning("fastdp: cannot take the host's port off the bridge: %s", exc)
            await self.run(self.host.stop)
        self._worker.shutdown(wait=False)

    # ------------------------------------------------------------ mesh -> plan
    @property
    def health(self) -> dict[str, PeerHealth]:
        """Heartbeat health per target peer (see fastdp_health)."""
        return self.heartbeats.peers

    def on_mesh(self, view: MeshView) -> None:
        self.view = view
        established = {p for p, c in view.connections.items() if c.established}
        self.startup.connections(established, view.connections, time.monotonic())
        self.floods.forget(established)
        # the switch's decisions outlive a blink of the connection (it remembers them
        # too); only peers that left the mesh are forgotten (a restarting peer drops out
        # of the topology for a moment: while its connection or its grace lasts, it stays)
        for peer in list(self.modes):
            if peer not in view.peers and peer not in view.connections and peer not in self.lost:
                self.modes.pop(peer)
        self._apply()

    def _apply(self) -> None:
        """Schedule a re-plan on the worker (never blocks the event loop)."""
        self._advertise_floods()
        if self.ctx is not None and self.host is not None:
            self.ctx.loop.run_in_executor(self._worker, self._apply_now)

    def _fastdp_peers_in_maps(self) -> set[int]:
        import ctypes

        from weave_fdp.datapath.fastdp import abi
        out = set()
        peers = self.host.dp.maps["fdp_peers"]
        for sid in range(abi.MAX_PEERS):
            v = peers.get(ctypes.c_uint32(sid))
            if v is not None and v.flags and v.mode == abi.Mode.FASTDP:
                out.add(sid)
        return out

    def _apply_now(self) -> None:
        from weave_fdp.datapath.fastdp.host import MeshInputs

        view = self.view
        if view is None or self.host is None or self.host.dp is None:
            return
        conns = {p: c for p, c in view.connections.items() if c.established}
        if self.startup.holds_kernel(bool(conns), time.monotonic()):
            return  # restarted: the kernel's entries are better than an empty mesh
        mesh = MeshInputs(
            local=view.local.name,
            short_ids={n: p.short_id for n, p in view.peers.items()},
            # a direct neighbour is its own next hop, even before routes catch up
            unicast={**{p: p for p in conns}, **{d: h for d, h in view.unicast.items() if h in conns}},
            broadcast=floods.kernel_hops(view.broadcast, conns, view.local.name, self.floods_by_sleeve),
            hop_ips={p: c.remote_ip for p, c in conns.items()},
            modes={p: self._mode(p) for p in conns},
            sealed={p for p, c in conns.items() if self.needs_encryption(p, c.remote_ip)},
            receive={p: "fastdp" for p in conns if self._rx_fastdp(p)})
        self.lost.keep(mesh, conns, time.monotonic(), self.healthy)
        self._sync_esp(view, conns, mesh)
        try:
            self.host.set_mesh(mesh)
        except Exception:
            log.exception("fastdp: cannot apply the mesh to the datapath")

    def needs_encryption(self, peer: str, remote_ip: str) -> bool:
        """``--password``, unless both ends trust each other (our ``--trusted-subnets``
        hold its address and its features say it trusts us)."""
        if not getattr(self.config, "password", None):
            return False
        trusted = tuple(getattr(self.config, "trusted_subnets", None) or ())
        return not (in_subnets(remote_ip, trusted) and self._peer_trusts_us(peer))

    def _sync_esp(self, view: MeshView, conns: dict[str, Any], mesh: Any) -> None:
        """On the worker: ESP states and policies for every encrypted connection whose
        peer has ESP (rekeyed when the connection is new); kept for lost connections
        in grace (the kernel still sends to them), removed for the others."""
        from weave_fdp.plumbing.underlay_route import route_to

        if not self.esp.local_ok:
            return
        mesh_node = self.ctx.mesh if self.ctx is not None else None
        want = {}
        for peer, c in conns.items():
            link = mesh_node.links.get(peer) if mesh_node is not None else None
            cipher = getattr(link, "cipher", None)
            if cipher is None or not self.esp.peer_ok.get(peer) or not self.needs_encryption(peer, c.remote_ip):
                continue
            route = route_to(c.remote_ip)
            if route is None:
                continue
            want[peer] = (peer, route.src, c.remote_ip, cipher)
        self.esp.sync(want, view.local.name, keep=set(mesh.hop_ips))
        mesh.xfrm = set(self.esp.installed) & set(mesh.hop_ips)

    def _mode(self, peer: str) -> str:
        """The mode written to the BPF map for ``peer`` (see fastdp_grace.mode_for)."""
        return mode_for(peer, self.modes, self._was_fastdp(peer))

    def _rx_fastdp(self, peer: str) -> bool:
        """Whether plain VXLAN data from ``peer`` is accepted (see fastdp_grace.accepts_fastdp)."""
        return accepts_fastdp(self._mode(peer), self.healthy(peer), self.unusable_reason(peer))

    def _was_fastdp(self, peer: str) -> bool:
        """``peer`` was in fastdp mode in the maps this router found at start (within STARTUP_GRACE)."""
        view = self.view
        sid = view.peers[peer].short_id if view and peer in view.peers else None
        return self.startup.was_fastdp(sid, time.monotonic())

    # ------------------------------------------------------------ FastdpControl
    def unusable_reason(self, peer: str) -> str | None:
        """Why fastdp cannot carry ``peer`` whatever its heartbeats say, or None.

        - encryption: with ``--password`` the switch checks that *we* trust the peer
          (``--trusted-subnets``); plain fastdp also needs the peer to trust us (the
          ``trusted`` flag of its features message), else one end would send in the
          clear what the other wants sealed;
        - "mtu" while heartbeats of the fastdp MTU cannot leave (EMSGSIZE: the path
          is narrower than the underlay);
        - a send error when no heartbeat ever came back.
        """
        if self.fatal:
            return self.fatal
        c = self.view.connections.get(peer) if self.view is not None else None
        if c is not None and self.needs_encryption(peer, c.remote_ip):
            why = self.esp.why_not(peer)
            if why:
                return why
        return self.heartbeats.unusable(peer)

    def floods_by_sleeve(self, peer: str) -> bool:
        """See :meth:`switch.FastdpControl.floods_by_sleeve`."""
        view = self.view
        relays = view is not None and self.floods.relays_into_sleeve(peer, view.local.name)
        return flood_overlay(self._mode(peer), relays) == "sleeve"

    # ------------------------------------------------------------ floods across overlays
    def _advertise_floods(self) -> None:
        """Tell each fastdp neighbour which sources' floods we relay into sleeve (on change)."""
        view, ctx = self.view, self.ctx
        if view is None or ctx is None:
            return
        established = {p for p, c in view.connections.items() if c.established}
        need = floods.needs_sleeve(view.broadcast, established, self._mode, self.floods.told)
        for peer, c in view.connections.items():
            if not c.established or "fastdp" not in c.overlays or not self.floods.to_send(peer, need):
                continue
            try:
                if ctx.send_overlay_control(peer, floods.encode(need, self.esp.local_ok)):
                    self.floods.sent[peer] = need
            except Exception as exc:   # the connection is going away; retried on the next change
                log.debug("fastdp: cannot send floods message to %s: %s", peer, exc)

    def on_overlay_control(self, peer: str, payload: bytes) -> None:
        """A neighbour's "floods" message; other overlays' messages are ignored."""
        msg = floods.decode(payload)
        if msg is None:
            return
        if self.esp.peer_ok.get(peer) != msg.esp:
            self.esp.peer_ok[peer] = msg.esp
            self._apply()
        if msg.sources is None:
            log.warning("fastdp: bad floods message from %s", peer)
            return
        if self.floods.heard(peer, msg.sources):
            log.info("fastdp: %s relays floods of %d source(s) into sleeve", peer, len(msg.sources))
            self._apply()

    def _peer_trusts_us(self, peer: str) -> bool:
        mesh = self.ctx.mesh if self.ctx is not None else None
        link = mesh.links.get(peer) if mesh is not None else None
        return bool(link is not None and getattr(link.features, "trusted", False))

    def last_heartbeat(self, peer: str) -> float | None:
        """When the last pong came back; for a peer that was on fastdp before this
        router restarted and has not answered yet, when its connection came up (the
        kernel kept forwarding meanwhile, so fastdp gets ``HOLD_AFTER`` to prove it)."""
        return self.startup.last_heartbeat(peer, self.heartbeats.last_pong(peer), self._was_fastdp(peer))

    async def set_dns_fastpath(self, settings: Any, entries: dict[bytes, Any]) -> None:
        """weaveDNS's names the kernel answers at the container veths (``dns_plan``), or
        off (``settings`` None)."""
        if self.host is not None:
            await self.run(self._set_dns, settings, entries)

    def _set_dns(self, settings: Any, entries: dict[bytes, Any]) -> None:
        """On the worker, like repairs, so a repair never sees half of a change."""
        self.host.set_dns(settings, entries)
        self._dns = (settings, entries)

    def dns_fastpath_stats(self) -> dict[str, int] | None:
        """The kernel's DNS counters (answered, rate_limited, passed by reason)."""
        return self.host.dns_stats() if self.host is not None else None

    async def host_addresses_changed(self) -> None:
        """expose/hide changed the bridge's addresses: the host's port sends from exactly those."""
        if self.host is not None:
            await self.run(self.host.sync_host_port)

    def set_mode(self, peer: str, mode: str) -> None:
        """The switch's decision for ``peer``: applied to the BPF map at once."""
        if self.modes.get(peer) != mode:
            log.info("fastdp: connection to %s now %s", peer, mode)
            self.modes[peer] = mode
            self._apply()

    def mtu(self, peer: str) -> int | None:
        return self.host.mtu if self.host else None

    def healthy(self, peer: str) -> bool:
        return self.heartbeats.healthy(peer, time.monotonic())

    # ------------------------------------------------------------ MAC ageing
    def _age_macs(self) -> None:
        """On the worker: drop learned MACs unseen for the ageing time (a bridge's 300 s)."""
        try:
            removed = self.host.age_macs()
        except Exception as exc:
            log.warning("fastdp: MAC ageing sweep failed: %s", exc)
            return
        self.aged_macs += len(removed)

    # ------------------------------------------------------------ watchdog
    def _watch(self) -> None:
        """On the worker: forget dead containers' ports; repair what was removed under us."""
        from weave_fdp.datapath.fastdp import watchdog

        if self.host is None:
            return
        try:
            if self.host.dp is not None:
                watchdog.prune_ports(self.host)
            damage = watchdog.find_damage(self.host)
        except Exception as exc:
            log.warning("fastdp: cannot check the datapath: %s", exc)
            return
        if not damage and self.host.dp is not None:
            try:
                self.host.sync_host_port()   # the bridge's MAC or addresses changed (weaveDNS, by hand)
            except Exception as exc:
                log.warning("fastdp: cannot sync the host's port: %s", exc)
            return
        now = time.monotonic()
        if not self.repair_backoff.due(now):
            return
        self.last_damage = damage or ["programs not loaded"]
        log.warning("fastdp: datapath damaged (%s); repairing", "; ".join(self.last_damage))
        try:
            watchdog.repair(self.host)
        except Exception as exc:
            self.repair_backoff.failed(now)
            if self.fatal is None:
                log.error("fastdp: repair failed, connections move to sleeve: %s", exc)
            self.fatal = f"fastdp failed: {exc}"
            return
        self.repairs += 1
        self.fatal = None
        self.repair_backoff.succeeded()
        self._apply_now()
        if self._dns is not None:
            try:
                self.host.set_dns(*self._dns)
            except (FdpError, OSError) as exc:   # the userspace server answers meanwhile
                log.warning("fastdp: weaveDNS's names not back in the kernel after the repair: %s", exc)
        if self.ctx is not None:
            self.ctx.loop.call_soon_threadsafe(self._open_heartbeats)
        log.warning("fastdp: datapath repaired in %.2f s", time.monotonic() - now)

    # ------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            if rounds % 20 == 0:    # every 5 s: repeat "floods" messages (a replaced connection lost them)
                self.floods.sent.clear()
                self._advertise_floods()
            if rounds % WATCH_EVERY == 0 and self.ctx is not None:
                self.ctx.loop.run_in_executor(self._worker, self._watch)
            if self.host is not None and self.ctx is not None:
                sweep_every = max(1, round(self.host.mac_sweep_interval() / HEARTBEAT_INTERVAL))
                if rounds % sweep_every == 0:
                    self.ctx.loop.run_in_executor(self._worker, self._age_macs)
            try:
                self._send_pings()
                self._check_receive()
            except Exception:
                log.exception("fastdp heartbeat round failed")
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _check_receive(self) -> None:
        """Re-plan when the set of peers accepted on fastdp changed (heartbeats came or went)."""
        rx = frozenset(p for p in self._targets() if self._rx_fastdp(p))
        if rx != self._rx_applied:
            self._rx_applied = rx
            self._apply()

    def _targets(self) -> dict[str, tuple[int, str]]:
        """Peers to heartbeat: direct fastdp connections, plus lost ones still in grace
        (so a router restart on either side does not read as a dead kernel path)."""
        view = self.view
        out: dict[str, tuple[int, str]] = {}
        if view is None:
            return out
        for peer, c in view.connections.items():
            if c.established and "fastdp" in c.overlays and peer in view.peers:
                out[peer] = (view.peers[peer].short_id, c.remote_ip)
        for peer, target in self.lost.targets().items():
            out.setdefault(peer, target)
        return out

    def _send_pings(self) -> None:
        view = self.view
        if view is None or self._tx is None or self.host is None or self.host.mtu is None:
            return
        me = view.local.short_id
        now_ns = time.monotonic_ns()
        targets = self._targets()
        self.heartbeats.retarget(targets)
        for peer, (sid, ip) in targets.items():
            seq = self.heartbeats.next_ping(peer)
            dgram = hbm.encode_datagram(hbm.Heartbeat(hbm.PING, me, seq, now_ns), me, sid, self.host.mtu)
            try:
                self._tx.sendto(dgram, (ip, hbm.abi.VXLAN_PORT))
                self.heartbeats.sent(peer)
            except OSError as exc:
                self.heartbeats.send_failed(peer, exc.errno, exc.strerror)

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
            peer = next((n for n, (sid, _ip) in self._targets().items() if sid == hb.src), None)
            if peer is None:
                continue
            if hb.kind == hbm.PING:
                self._pong(peer, hb)
            else:
                self.heartbeats.pong(peer, time.monotonic(), (time.monotonic_ns() - hb.echo_ns) / 1e6)

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
        """fastdp's view of ``peer``: mode "fastdp" only when the switch chose it (the
        reported mode is the switch's decision); otherwise why fastdp is not carrying it."""
        h = self.health.get(peer)
        rtt = h.rtt_ms if h else None
        if self.modes.get(peer) == "fastdp":
            enc = (peer in self.esp.installed) if getattr(self.config, "password", None) else None
            return {"mode": "fastdp", "reason": None, "mtu": self.mtu(peer), "rtt_ms": rtt, "encrypted": enc}
        why = self.heartbeats.why_not_fastdp(peer, time.monotonic(), self.fatal)
        return {"mode": None, "reason": why, "mtu": self.mtu(peer), "rtt_ms": rtt}

    def status(self) -> dict[str, Any]:
        return {"mtu": self.host.mtu if self.host else None, "esp": self.esp.status(),
                "pin_dir": str(self.host.pin_dir) if self.host else None,
                # which kernel hook runs each program (tcx: 6.6+, else clsact filters)
                "hooks": dict(sorted(getattr(self.host.dp, "hooks", {}).items())) if self.host else {},
                "watchdog": {"repairs": self.repairs, "last_damage": self.last_damage, "fatal": self.fatal},
                "mac_ageing": {"ageing_s": self.host.mac_ageing_s if self.host else None, "aged": self.aged_macs},
                "peers": self.heartbeats.status(time.monotonic(), self.modes)}


def make_overlay(config: Any) -> FastdpOverlay | None:
    """The router's factory hook (see overlay.OVERLAY_FACTORIES)."""
    return FastdpOverlay(config)
