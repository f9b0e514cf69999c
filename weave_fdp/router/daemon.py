"""The per-host router daemon: mesh + API + overlays, on one asyncio loop.

Start order: bind the API socket (the lock: a second router in this netns fails
here), check the state dir, listen on the mesh port, start overlays, then answer the
API (requests wait until everything is up, so `launch` returning means ready).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from typing import Any

from weave_fdp import __version__, paths
from weave_fdp.errors import FdpError, NotFound, RouterNotRunning, UsageError
from weave_fdp.router import connection_rows as rows
from weave_fdp.router import flow_delta
from weave_fdp.router.api import ApiServer
from weave_fdp.router.config import RouterConfig, format_address, parse_peer_address
from weave_fdp.router.mesh.admission import source_of
from weave_fdp.router.mesh.maker import ConnectionMaker
from weave_fdp.router.mesh.node import Identity, MeshNode
from weave_fdp.router.mesh.topology import SHORT_ID_SPACE
from weave_fdp.router.mesh.transport import TcpTransport, protocol_max_from_env
from weave_fdp.router.overlay import load_overlays
from weave_fdp.router.overlay.base import DirectConnection, MeshView, Overlay, PeerInfo, RouterContext
from weave_fdp.router.overlay.switch import SwitchDriver
from weave_fdp.router import statefile
from weave_fdp.router.state import RouterState, random_peer_name

log = logging.getLogger(__name__)

READY_WAIT_S = 30.0   # an API request waits this long for a starting router (compiles are slow on small VMs)


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config.validate()
        self.state = RouterState(config.state_dir or paths.state_dir())
        self.api = ApiServer()
        self.started = time.time()
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.overlays: list[Overlay] = []
        self.node: MeshNode | None = None
        self.transport: TcpTransport | None = None
        self.maker: ConnectionMaker | None = None
        self.ctx: RouterContext | None = None
        self._close_metrics: Any = None   # stops the /metrics server (None: not serving)
        self.ipam: Any = None             # ipam.service.IpamService (None: --ipalloc-range "")
        self.dns: Any = None              # dns.service.DnsService (None with --no-dns)

    # ------------------------------------------------------------ start / stop

    async def start(self) -> None:
        cfg = self.config
        await self.api.start()
        self.state.ensure_writable()
        if cfg.metrics_addr:
            try:
                self._start_metrics(cfg.metrics_addr)
            except UsageError as exc:
                if not cfg.metrics_optional:
                    raise
                log.warning("%s (no metrics until restarted with --metrics-addr)", exc)
        saved = self.state.load_peer()
        name = cfg.name or saved.get("name") or random_peer_name()
        await self._load_ipam(name)
        sid = saved.get("short_id") if saved.get("name") == name else None
        if not isinstance(sid, int) or not 0 <= sid < SHORT_ID_SPACE:
            sid = random.randrange(SHORT_ID_SPACE)
        ident = Identity(name=name, nickname=cfg.nickname or socket.gethostname(),
                         uid=random.getrandbits(63), incarnation=int(time.time() * 1000), short_id=sid)
        self.node = node = MeshNode(ident, port=cfg.port, conn_limit=cfg.conn_limit)
        self.state.save_peer(name, sid)
        if not cfg.no_dns:
            from weave_fdp.router.dns.service import DnsService

            self.dns = DnsService(cfg, self.state.dir, name)
            self.dns.join(node)   # before any link: no early dns gossip is dropped
        if self.ipam is not None:
            self.ipam.start(node)
        self.overlays = load_overlays(cfg)
        self.transport = TcpTransport(node, host=cfg.listen_host, password=cfg.password,
                                      trusted_subnets=cfg.trusted_subnets,
                                      overlays=tuple(o.name for o in self.overlays),
                                      protocol_max=protocol_max_from_env())
        await self.transport.start()
        self.maker = ConnectionMaker(node, self.transport.dial, discovery=cfg.discovery)
        node.listeners.append(self._on_mesh)
        node.on_overlay_control = self._on_overlay_control
        node.on_link_change = self._on_link_change
        self._register_ops()
        self.ctx = RouterContext(api=self.api, config=cfg, state_dir=self.state.dir,
                                 local=self.local_info(), send_overlay_control=node.send_overlay_control,
                                 loop=asyncio.get_running_loop(), mesh=node, mesh_view=self.mesh_view,
                                 ipam=self.ipam)
        for ov in list(self.overlays):
            try:
                await ov.start(self.ctx)
            except Exception as exc:
                log.error("overlay %s failed to start, continuing without it: %s", ov.name, exc)
                self.overlays.remove(ov)
        if self.overlays:
            self.ctx.switch = SwitchDriver(self.ctx)
            self.ctx.switch.start()
        if self.api.handler("attach") is None:
            await self._register_bridge_ports()
        from weave_fdp.router import expose
        from weave_fdp.router.overlay.switch import fastdp_of

        exposer = expose.register(self.api, self.ipam, self.state.dir, datapath=fastdp_of(self.ctx))
        self.ctx.add_report_section("expose", exposer.report)
        self._overlays_started = True   # peers may have connected while overlays started:
        self._on_mesh()                 # give them the view they missed
        node.start()
        self.maker.start()
        given = [format_address(*parse_peer_address(p, cfg.port)) for p in cfg.peers]
        direct = self.state.initial_targets(given, resume=cfg.resume)
        self.maker.add_direct([parse_peer_address(p, cfg.port) for p in direct])
        if self.dns is not None:
            await self.dns.start(self.ctx)   # sockets after the mesh: a restarted router reconnects first
        self.ready.set()
        log.info("router %s(%s) short id %d listening on TCP %d, overlays: %s", name, ident.nickname, sid,
                 cfg.port, ", ".join(o.name for o in self.overlays) or "none")

    async def _load_ipam(self, name: str) -> None:
        """IPAM from the --ipalloc-* flags and the state dir; a range that overlaps a route of
        this host, or a corrupt state file, fails the launch with one line."""
        settings = self.config.ipam_settings()
        if settings is None:
            return
        from weave_fdp.plumbing.links import routes_overlapping
        from weave_fdp.router.ipam.addr import to_net
        from weave_fdp.router.ipam.service import IpamService, register_ops

        rng, subnet, mode = settings
        clash = await asyncio.to_thread(routes_overlapping, str(to_net(rng)))
        if clash:
            raise UsageError(f"--ipalloc-range {to_net(rng)} overlaps the host route {clash[0]}",
                             fix="choose a range no route of this host covers, e.g. --ipalloc-range 10.32.0.0/12")
        self.ipam = IpamService(name, rng, subnet, mode, self.state.dir)
        self.ipam.load()
        register_ops(self.api, self.ipam, wrap=self._when_ready)

    async def _register_bridge_ports(self) -> None:
        """attach/detach/ps without fastdp: containers on the bridge, remote frames by sleeve."""
        from weave_fdp.datapath.bridge_ports import BridgePorts
        from weave_fdp.router import containers

        ports = BridgePorts(mtu=self.config.mtu)
        await asyncio.to_thread(ports.start)
        for ov in self.overlays:      # every remote frame is the sleeve's: it takes them over 64 KiB
            fw = getattr(ov, "fw", None) if ov.name == "sleeve" else None
            if fw is not None:
                fw.big_frames = ports.big
        assert self.ctx is not None
        containers.register(self.api, ports, self.state.dir, ipam=self.ipam,
                           listeners=self.ctx.container_listeners)

    def _start_metrics(self, addr: str) -> None:
        """Serve /metrics from a thread; each scrape takes a report on the loop (a consistent view).

        A bad address or a busy port raises UsageError, failing the launch with one line.
        """
        from weave_fdp.router.metrics import start_metrics_server

        loop = asyncio.get_running_loop()

        async def _report() -> dict[str, Any]:
            await asyncio.wait_for(self.ready.wait(), 4)
            return self.report()

        def get_report() -> dict[str, Any]:
            return asyncio.run_coroutine_threadsafe(_report(), loop).result(timeout=5)

        self._close_metrics = start_metrics_server(addr, get_report)

    async def stop(self) -> None:
        if self._close_metrics is not None:
            # in a thread: a scrape in flight waits on this loop, and shutdown() waits on it
            close, self._close_metrics = self._close_metrics, None
            try:
                await asyncio.to_thread(close)
            except Exception as exc:
                log.warning("metrics server: error while stopping: %s", exc)
        if self.dns is not None:
            await self.dns.stop()
        if self.ctx is not None and self.ctx.switch is not None:
            await self.ctx.switch.stop()
        for ov in self.overlays:
            try:
                await ov.stop()
            except Exception as exc:
                log.warning("overlay %s: error while stopping: %s", ov.name, exc)
        if self.ipam is not None:
            await self.ipam.stop()
        if self.maker:
            self.maker.stop()
        if self.node:
            self.node.stop()
        if self.transport:
            await self.transport.stop()
        await self.api.stop()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------ overlay hook

    def local_info(self) -> PeerInfo:
        assert self.node is not None
        e = self.node.topology.local
        return PeerInfo(e.name, e.nickname, e.short_id, e.uid, True)

    def mesh_view(self) -> MeshView:
        node = self.node
        assert node is not None
        routes = node.routes
        peers = {n: PeerInfo(n, e.nickname, e.short_id, e.uid, routes.reachable(n))
                 for n, e in node.topology.peers.items()}
        conns = {p: DirectConnection(p, l.remote_host, l.remote_port, l.outbound, l.established,
                                     l.features.overlays) for p, l in node.links.items()}
        return MeshView(local=peers[node.name], peers=peers, connections=conns,
                        unicast=dict(routes.unicast), broadcast=routes.broadcast)

    def _on_mesh(self) -> None:
        if not self.overlays or not getattr(self, "_overlays_started", False):
            return   # an overlay gets views only once started (it needs its ctx)
        view = self.mesh_view()
        if self.ctx is not None and self.ctx.switch is not None:
            self.ctx.switch.on_mesh(view)
        for ov in self.overlays:
            try:
                ov.on_mesh(view)
            except Exception:
                log.exception("overlay %s: on_mesh failed", ov.name)

    def _on_link_change(self) -> None:
        if self.maker is not None:
            self.maker.kick()

    def _on_overlay_control(self, peer: str, payload: bytes) -> None:
        if not getattr(self, "_overlays_started", False):
            return   # not started: the sleeve's key exchange resends once it sees the mesh
        for ov in self.overlays:
            try:
                ov.on_overlay_control(peer, payload)
            except Exception:
                log.exception("overlay %s: bad control message from %s", ov.name, peer)

    # ------------------------------------------------------------ API ops

    def _register_ops(self) -> None:
        ops = {"report": self._op_report, "top": self._op_top, "connect": self._op_connect,
               "forget": self._op_forget, "stop": self._op_stop}
        if self.ipam is None:
            ops["rmpeer"] = ops["prime"] = self._op_no_ipam
        for op, fn in ops.items():
            self.api.register(op, self._when_ready(fn))

    def _when_ready(self, fn: Any) -> Any:
        async def wrapped(args: dict[str, Any]) -> Any:
            try:
                await asyncio.wait_for(self.ready.wait(), READY_WAIT_S)
            except asyncio.TimeoutError:   # a slow start, not a bug: no traceback in the log
                raise RouterNotRunning(f"the router is still starting ({READY_WAIT_S:g} s and not ready)",
                                       fix="retry in a few seconds") from None
            return await fn(args)
        return wrapped

    async def _resolve(self, peers: Any) -> list[tuple[str, int]]:
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise UsageError("peers must be a list of HOST[:PORT] strings")
        out = []
        loop = asyncio.get_running_loop()
        for p in peers:
            host, port = parse_peer_address(p, self.config.port)
            try:
                await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 3)
            except (OSError, asyncio.TimeoutError) as exc:
                raise NotFound(f"peer address {p!r} does not resolve: {getattr(exc, 'strerror', None) or exc}",
                               fix="give an IP address or a name in /etc/hosts") from None
            out.append((host, port))
        return out

    async def _op_connect(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.maker is not None
        addrs = await self._resolve(args.get("peers", []))
        replaced = self.maker.add_direct(addrs, replace=bool(args.get("replace")))
        self.state.save_direct(self.maker.direct())
        return {"targets": self.maker.direct(), "replaced": replaced}

    async def _op_forget(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.maker is not None
        peers = args.get("peers", [])
        if not isinstance(peers, list):
            raise UsageError("peers must be a list")
        unknown = self.maker.forget([parse_peer_address(p, self.config.port) for p in peers])
        self.state.save_direct(self.maker.direct())
        return {"targets": self.maker.direct(), "unknown": unknown}

    async def _op_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return {"stopping": True, "pid": os.getpid()}

    async def _op_no_ipam(self, args: dict[str, Any]) -> Any:
        raise FdpError("IPAM is off in this router (launched with --ipalloc-range \"\")",
                       fix="launch with an --ipalloc-range to use IPAM")

    async def _op_report(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.report()

    async def _op_top(self, args: dict[str, Any]) -> dict[str, Any]:
        """The report with the changed and top-N flows only (router/flow_delta.py)."""
        since, limit = flow_delta.check_args(args)
        as_of = time.time()
        return flow_delta.top_report(self.report(), as_of, since, limit)

    # ------------------------------------------------------------ report

    def report(self) -> dict[str, Any]:
        node, maker, tr = self.node, self.maker, self.transport
        assert node is not None and maker is not None and tr is not None
        local = node.topology.local
        routes = node.routes
        peers = []
        for n, e in sorted(node.topology.peers.items()):
            peers.append({"name": n, "nickname": e.nickname, "short_id": e.short_id, "uid": e.uid,
                          "version": e.version, "reachable": routes.reachable(n),
                          "next_hop": routes.unicast.get(n),
                          "connections": [{"name": c.peer, "address": c.address, "outbound": c.outbound,
                                           "established": c.established} for c in e.connections]})
        return {
            "version": __version__,
            "router": {"name": local.name, "nickname": local.nickname, "short_id": local.short_id,
                       "uid": local.uid, "uptime_s": round(time.time() - self.started, 1),
                       "encryption": bool(self.config.password), "port": self.config.port,
                       "trusted_subnets": list(self.config.trusted_subnets),
                       "overlays": [o.name for o in self.overlays], "state_dir": str(self.state.dir),
                       "discovery": self.config.discovery, "conn_limit": self.config.conn_limit,
                       "pid": os.getpid(), "gossip_tx_bytes": node.gossip_tx_bytes,
                       "terminations": node.terminations, "mtu": self.config.mtu,
                       "inbound": tr.status(), "state_recovered": statefile.recovered()},
            "peers": peers,
            "connections": self._connections(),
            "routes": {"unicast": dict(sorted(routes.unicast.items())), "broadcast": routes.broadcast},
            "targets": maker.direct(),
            "overlays": {o.name: _safe(o.status, {}) for o in self.overlays},
            "datapath": {},
            "ipam": _safe(self.ipam.status, None) if self.ipam is not None else None,
            "dns": None,
            **{k: self.ctx.report_section(k) for k in (self.ctx.report_parts if self.ctx else [])},
        }

    def _conn_mode(self, peer: str) -> dict[str, Any]:
        """The mode of ``peer``'s connection: see :func:`connection_mode` for the rule."""
        sw = self.ctx.switch if self.ctx is not None else None
        decision = _safe(lambda: sw.status(peer), None) if sw is not None else None
        statuses = [(ov.name, _safe(lambda: ov.connection_status(peer), {}) or {}) for ov in self.overlays]
        return rows.connection_mode(decision, statuses)

    def _connections(self) -> list[dict[str, Any]]:
        node, maker, tr = self.node, self.maker, self.transport
        assert node is not None and maker is not None and tr is not None
        mono, wall = time.monotonic(), time.time()
        out = [rows.link_row(link, format_address(link.remote_host, link.remote_port), self._conn_mode(peer))
               for peer, link in sorted(node.links.items())]
        out += [rows.target_row(t, mono, wall) for t in sorted(maker.targets.values(), key=lambda t: t.address)
                if t.state != "connected" and not t.is_self]
        linked_hosts = {source_of(link.remote_host) for link in node.links.values()}
        out += [rows.failure_row(f) for f in tr.failures.rows(wall)   # one row per source, however many failed
                if f.source not in linked_hosts]
        return out


def _safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        log.warning("report section failed: %s", exc)
        return default


def run_foreground(config: RouterConfig) -> None:
    """Run the router until SIGTERM/SIGINT or the `stop` op; FdpError on startup failures."""
    asyncio.run(Router(config).run())
