"""weaveDNS in the router: gossip channel "dns", persistence, API ops, the attach hook.

    svc = DnsService(ctx); await svc.start()     # the router does this unless --no-dns

- Gossip: changes go to neighbours at once (they pass on what was new to them); full
  state goes to every neighbour when a connection comes up, and periodically with the
  mesh's gossip round. Entries of a peer that left the mesh are purged.
- Persistence: our own entries (tombstones too, so versions only grow) and the
  namespaces they belong to, in ``dns.json`` of the state dir, written atomically on
  every change; a restarted router announces them again.
- Containers: attach/detach call :meth:`on_container` (a listener of
  ``router.containers``); a container whose namespace is gone (killed, deleted) is
  found by a sweep every second and its names are removed everywhere.
- API ops: ``dns-add``, ``dns-remove``, ``dns-lookup``; ``report["dns"]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from weave_fdp.errors import FdpError, NotFound, ProtocolError, UsageError
from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.datapath.dns_plan import DnsSettings, rate_settings
from weave_fdp.router.dns import names, resolvconf, wire
from weave_fdp.router.dns.kernel_answers import KernelAnswers
from weave_fdp.router.dns.records import EXTERNAL, Entry, Records, shuffled
from weave_fdp.router.dns.ratelimit import DEFAULT_BURST, SourceLimiter
from weave_fdp.router.dns.responder import Responder
from weave_fdp.router.dns.server import DnsServer
from weave_fdp.router.dns.upstream import Upstream
from weave_fdp.router.state import atomic_write_json

log = logging.getLogger(__name__)

CHANNEL = "dns"
STATE_FILE = "dns.json"
SWEEP_S = 1.0            # how often vanished containers are looked for
EXPIRE_S = 60.0          # how often old tombstones are dropped
REPAIR_S = 5.0           # how often the bridge's DNS address and MAC are checked
ABSENT_GRACE_S = 5.0     # an origin missing from the topology this long is purged
DEFAULT_LISTEN = "169.254.53.53"
DEFAULT_PORT = 53


def parse_listen(text: str) -> tuple[str, int]:
    """``--dns-listen-address`` ``IP[:PORT]`` (IPv4) -> (ip, port)."""
    host, _, port = text.partition(":")
    try:
        ip = names.check_ipv4(host)
    except UsageError:
        raise UsageError(f"--dns-listen-address {text!r} is not IPv4[:PORT]",
                         fix=f"e.g. {DEFAULT_LISTEN} or {DEFAULT_LISTEN}:53") from None
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise UsageError(f"--dns-listen-address {text!r}: port {port!r} is not 1-65535")
    return ip, int(port) if port else DEFAULT_PORT


class DnsService:
    """Made and joined to the mesh as soon as the mesh node exists (:meth:`join`: no gossip
    that arrives early is lost), started once the router's context is there (:meth:`start`)."""

    def __init__(self, config: Any, state_dir: Path, local_name: str, *, clock: Any = time.time) -> None:
        cfg = config
        self.ctx: Any = None
        self.mesh: Any = None
        self.clock = clock
        self.domain = names.check_domain(cfg.dns_domain)
        self.ttl = int(cfg.dns_ttl)
        self.listen_ip, self.listen_port = parse_listen(cfg.dns_listen_address)
        self.network = cfg.ipalloc_range or None   # "" = IPAM off: no range to hold addresses to
        self.records = Records(local_name)
        self.responder = Responder(self.records, self.domain, self.ttl)
        self.upstream = Upstream(exclude={self.listen_ip})
        rate = float(cfg.dns_rate_limit)
        self.rate, self.burst = rate, max(DEFAULT_BURST, 2 * rate)
        # isolate: UDP answered by a process of its own, apart from the router's GIL (docs/DNS.md)
        self.server = DnsServer(self.responder, self.upstream, self.listen_ip, self.listen_port, device="weave",
                                limiter=SourceLimiter(rate, self.burst), isolate=True)
        self.kernel: KernelAnswers | None = None   # answers at the container veths (fastdp only)
        self.file = Path(state_dir) / STATE_FILE
        self.targets: dict[str, dict[str, Any]] = {}   # container -> {"path", "ns": [dev, ino], "resolv"}
        self.rl = RateLimitedLog(log)
        self.channel: Any = None
        self.bridge_mac: str | None = None
        self.bridge_ifindex = 0          # the bridge the server's sockets are bound to (SO_BINDTODEVICE)
        self.rebinds = 0
        self.error: str | None = None
        self.sent_at = 0.0           # wall clock of the last local change's gossip
        self._links: set[str] = set()
        self._peers: set[str] = set()
        self._absent: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._load()

    # ------------------------------------------------------------ lifecycle

    def join(self, mesh: Any) -> None:
        """Take part in the gossip of channel "dns" (restored names go out with the first links)."""
        if self.mesh is not None or mesh is None:
            return
        self.mesh = mesh
        self.channel = mesh.register_channel(CHANNEL, self)
        mesh.listeners.append(self._on_mesh)

    async def start(self, ctx: Any, *, serve: bool = True) -> None:
        """Register ops, the attach hook and the report section; with ``serve`` (the router)
        also put the address on the bridge and answer on it."""
        from weave_fdp.plumbing import dns_link

        self.ctx = ctx
        # snapshot rebuilds on the loop, coalesced (a burst of changes: one rebuild; docs/DNS.md)
        self.responder.ref.schedule = asyncio.get_running_loop().call_later
        self.join(ctx.mesh)
        self._on_mesh()                       # links made before we joined get our state now
        ctx.add_report_section("dns", self.report)
        for op, fn in (("dns-add", self.op_add), ("dns-remove", self.op_remove), ("dns-lookup", self.op_lookup),
                       ("dns-kernel", self.op_kernel)):
            ctx.api.register(op, fn)
        ctx.container_listeners.append(self.on_container)
        self._task = asyncio.get_running_loop().create_task(self._housekeeping())
        if not serve:
            self.error = "not serving (no sockets)"
            return
        try:
            self.bridge_mac = await asyncio.to_thread(dns_link.ensure_bridge_side, self.listen_ip, self.bridge_mac)
            self._save()
            self.bridge_ifindex = _bridge_ifindex()
            await self.server.start()
        except (OSError, FdpError) as exc:
            self.error = f"cannot serve DNS on {self.listen_ip}:{self.listen_port}: {exc}"
            log.error("weaveDNS: %s; names are still gossiped, nothing answers queries here", self.error)
        else:
            log.info("weaveDNS on %s:%d (UDP, TCP) for %s, ttl %d s", self.listen_ip, self.listen_port,
                     self.domain, self.ttl)
            self._start_kernel_answers()

    def _start_kernel_answers(self) -> None:
        """With fastdp: the names go into the kernel too, which answers most queries at the
        container's veth (docs/DNS.md); the userspace server answers the rest."""
        from weave_fdp.router.overlay.switch import fastdp_of

        control = fastdp_of(self.ctx)
        if control is None or not hasattr(control, "set_dns_fastpath"):
            return
        interval, burst = rate_settings(self.rate, self.burst)
        settings = DnsSettings(self.listen_ip, self.listen_port, interval, burst)
        self.kernel = KernelAnswers(control, settings, self.domain, self.ttl)
        self.responder.ref.on_swap.append(self.kernel.on_snapshot)
        self.kernel.on_snapshot(self.responder.ref.current)

    async def stop(self) -> None:
        self.responder.ref.schedule = None        # the loop is going: rebuild at once from now on
        self.responder.ref.flush()
        if self.kernel is not None:
            self.responder.ref.on_swap.remove(self.kernel.on_snapshot)
            await self.kernel.stop()              # no stale names answered while no router runs
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.server.stop()

    # ------------------------------------------------------------ persistence

    def _load(self) -> None:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("weaveDNS: ignoring unreadable %s: %s", self.file, exc)
            return
        try:
            entries = wire.decode(bytes.fromhex(data["entries"]))
            targets = data.get("targets", {})
            if not isinstance(targets, dict):
                raise ValueError("targets is not a map")
        except (KeyError, ValueError, TypeError, ProtocolError) as exc:
            log.warning("weaveDNS: ignoring malformed %s: %s", self.file, exc)
            return
        self.records.restore(entries)
        self.targets = {k: v for k, v in targets.items() if isinstance(v, dict)}
        mac = data.get("bridge_mac")
        self.bridge_mac = mac if isinstance(mac, str) and re.match(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", mac) else None
        log.info("weaveDNS: restored %d local names", sum(e.live for e in self.records.local_entries()))

    def _save(self) -> None:
        try:
            atomic_write_json(self.file, {"version": 1, "entries": wire.encode(self.records.local_entries()).hex(),
                                          "targets": self.targets, "bridge_mac": self.bridge_mac})
        except OSError as exc:
            self.rl.error("save", "weaveDNS: cannot write %s: %s", self.file, exc)

    # ------------------------------------------------------------ local changes

    def _changed(self, entries: list[Entry]) -> None:
        """Our entries changed: persist, tell the neighbours."""
        if not entries:
            return
        self._save()
        self.sent_at = self.clock()
        if self.channel is not None:
            self.channel.gossip_neighbours(wire.encode(entries))

    def add(self, hostname: str, container: str, addrs: list[str]) -> list[Entry]:
        now = self.clock()
        changed = [e for e in (self.records.add(hostname, container, a, now) for a in addrs) if e is not None]
        self._changed(changed)
        return changed

    def remove(self, **match: Any) -> list[Entry]:
        changed = self.records.remove(self.clock(), **match)
        self._changed(changed)
        return changed

    # ------------------------------------------------------------ gossip (mesh Gossiper)

    def gossip(self) -> bytes | None:
        entries = self.records.entries()
        return wire.encode(entries) if entries else None

    def on_gossip(self, src: str, payload: bytes) -> bytes | None:
        changed = self._merge(src, payload)
        return wire.encode(changed) if changed else None

    def on_gossip_broadcast(self, src: str, payload: bytes) -> None:
        self._pass_on(self._merge(src, payload))

    def on_gossip_unicast(self, src: str, payload: bytes) -> None:
        self._pass_on(self._merge(src, payload))

    def _pass_on(self, changed: list[Entry]) -> None:
        if changed and self.channel is not None:
            self.channel.gossip_neighbours(wire.encode(changed))

    def _merge(self, src: str, payload: bytes) -> list[Entry]:
        try:
            entries = wire.decode(payload)
        except ProtocolError as exc:
            self.rl.warning(f"gossip {src}", "weaveDNS: gossip from %s refused: %s", src, exc)
            return []
        changed = self.records.merge(entries, self.clock())
        ours = [e for e in changed if e.origin == self.records.local]
        if ours:
            # stale copies of our own entries: our answer must reach the sender too
            self._save()
            if self.channel is not None:
                self.channel.gossip_neighbours(wire.encode(ours))
            changed = [e for e in changed if e.origin != self.records.local]
        return changed

    def _on_mesh(self) -> None:
        """New connections get our full state; peers gone from the topology lose their names."""
        mesh = self.mesh
        if mesh is None:
            return
        links = set(mesh.links)
        if links - self._links and self.channel is not None:
            full = self.gossip()
            if full:
                self.channel.gossip_neighbours(full)
        self._links = links
        peers = set(mesh.topology.peers)
        for gone in self._peers - peers:
            self._purge(gone, "left the mesh")
        self._peers = peers

    def _purge(self, origin: str, why: str) -> None:
        n = self.records.purge_origin(origin)
        self._absent.pop(origin, None)
        if n:
            log.info("weaveDNS: %d names of peer %s dropped: it %s", n, origin, why)

    # ------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        last_expire = last_repair = 0.0
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                now = self.clock()
                if now - last_repair >= REPAIR_S and self.error is None:
                    last_repair = now
                    await self._repair_bridge_side()
                await self._sweep_vanished()
                self._sweep_absent(time.monotonic())
                if now - last_expire >= EXPIRE_S:
                    last_expire = now
                    if self.records.expire(now):
                        self._save()
            except Exception:
                log.exception("weaveDNS: housekeeping failed")

    async def _repair_bridge_side(self) -> None:
        """Put back our address and MAC on the bridge if the bridge was made again."""
        from weave_fdp.plumbing import dns_link

        if not dns_link.bridge_side_intact(self.listen_ip, self.bridge_mac):
            try:
                await asyncio.to_thread(dns_link.ensure_bridge_side, self.listen_ip, self.bridge_mac, first=False)
            except FdpError as exc:
                self.rl.warning("bridge", "weaveDNS: cannot restore %s on the weave bridge: %s", self.listen_ip, exc)
                return
        # the server's sockets are bound to the bridge by its index: a bridge made again (the
        # fastdp watchdog's repair) would leave them deaf, so they are bound anew to it
        index = _bridge_ifindex()
        if index and self.bridge_ifindex and index != self.bridge_ifindex:
            log.warning("weaveDNS: the weave bridge was made again (index %d -> %d); binding the server anew",
                        self.bridge_ifindex, index)
            await self.server.stop()
            try:
                await self.server.start()
            except OSError as exc:
                self.rl.warning("rebind", "weaveDNS: cannot serve on the new bridge yet: %s", exc)
                return
            self.bridge_ifindex = index
            self.rebinds += 1

    def _sweep_absent(self, mono: float) -> None:
        """Origins we hold names of but the topology does not know (names that arrived
        before or after their peer): purged after a grace period."""
        mesh = self.mesh
        if mesh is None:
            return
        peers = set(mesh.topology.peers)
        for origin in self.records.origins() - peers - {self.records.local}:
            since = self._absent.setdefault(origin, mono)
            if mono - since >= ABSENT_GRACE_S:
                self._purge(origin, "is not in the mesh")
        for origin in list(self._absent):
            if origin in peers:
                del self._absent[origin]

    async def _sweep_vanished(self) -> None:
        for container, info in list(self.targets.items()):
            if _same_namespace(info):
                continue
            removed = self.remove(container=container)
            self._forget_target(container)
            if removed:
                log.info("weaveDNS: %s is gone; its names %s removed", container,
                         ", ".join(sorted({e.hostname for e in removed})))

    def _remember_target(self, container: str, netns_path: str, resolv: Path | None = None) -> None:
        try:
            st = os.stat(netns_path)
        except OSError:
            return
        info = {"path": netns_path, "ns": [st.st_dev, st.st_ino]}
        if resolv is not None:
            info["resolv"] = str(resolv)
        elif "resolv" in self.targets.get(container, {}):
            info["resolv"] = self.targets[container]["resolv"]
        self.targets[container] = info
        self._save()

    def _forget_target(self, container: str) -> None:
        info = self.targets.pop(container, None)
        if info and info.get("resolv"):
            try:
                resolvconf.remove(Path(info["resolv"]))
            except OSError as exc:
                self.rl.warning("resolv", "weaveDNS: cannot remove %s: %s", info["resolv"], exc)
        self._save()

    # ------------------------------------------------------------ attach / detach hook

    async def on_container(self, event: str, info: dict[str, Any]) -> dict[str, Any] | None:
        """Listener of router.containers: ``attach`` registers the target's name and points its
        resolver here; ``detach`` removes the names of the addresses it took away (all of
        them when the container left the network)."""
        target, path, args = info["target"], info["netns_path"], info.get("args") or {}
        if event == "detach":
            ips = [names.check_ipv4(c) for c in info.get("removed") or []]
            if info.get("all"):
                removed = self.remove(container=target)
                self._forget_target(target)
            else:
                removed = [e for ip in ips for e in self.remove(container=target, addr=ip)]
            return {"dns": {"removed": sorted({e.hostname for e in removed})}} if removed else None
        if event != "attach" or args.get("without_dns"):
            return None
        bad_name: UsageError | None = None
        try:
            fqdn = self._attach_name(target, args)
        except UsageError as exc:
            fqdn, bad_name = None, exc
        ips = [names.check_ipv4(c) for c in info.get("cidrs") or []]
        added_at = None
        if fqdn:
            changed = self.add(fqdn, target, ips)
            # wall clock when the name went out (benchmarks time gossip and answer from it):
            # stamped by _changed before the gossip is sent, so a busy machine that runs
            # the reader on the other host first never makes the name resolve "before" it
            added_at = round(self.sent_at if changed else self.clock(), 6)
        resolv = await self._point(target, path, str(info.get("ifname") or "ethwe"))
        self._remember_target(target, path, resolv)
        if bad_name is not None:
            raise bad_name                      # attached and pointed at DNS, but nameless: say so
        return {"dns": {"name": fqdn, "nameserver": self.listen_ip, "resolv_conf": str(resolv) if resolv else None,
                        "added_at": added_at}}

    def _attach_name(self, target: str, args: dict[str, Any]) -> str | None:
        """The name attach registers: ``-h FQDN`` (or a bare label, put in the domain),
        ``--name NAME`` (in the domain), else the target's own name when it makes a valid
        label (``netns:web.1`` does not: no name then). A bad -h/--name is an error that
        says the container is attached all the same."""
        try:
            if args.get("hostname"):
                return names.qualify(str(args["hostname"]), self.domain)
            if args.get("name"):
                return names.check_name(f"{str(args['name']).rstrip('.')}.{self.domain}")
        except UsageError as exc:
            raise UsageError(f"{target} is attached, but without a DNS name: {exc.message}",
                             fix=exc.fix or "add one with: weave-fdp dns-add TARGET -h NAME") from None
        label = names.label_from_target(target)
        if label is None or "." in label:
            return None
        try:
            return names.check_name(f"{label}.{self.domain}")
        except UsageError:
            log.info("weaveDNS: %s has no name that makes a DNS label; none registered", target)
            return None

    async def _point(self, target: str, path: str, ifname: str = "ethwe") -> Path | None:
        """Route and neighbour to our address in the container; its resolv.conf for netns targets."""
        from weave_fdp.plumbing import dns_link

        if self.bridge_mac is None:
            return None
        await asyncio.to_thread(dns_link.point_container, path, self.listen_ip, self.bridge_mac, ifname)
        resolv = resolvconf.path_for(target)
        if resolv is not None:
            nameserver = self.listen_ip if self.listen_port == DEFAULT_PORT else None
            if nameserver is None:
                log.warning("weaveDNS listens on port %d: resolv.conf can only name port 53; %s not written",
                            self.listen_port, resolv)
                return None
            await asyncio.to_thread(resolvconf.write, resolv, nameserver, self.domain)
        return resolv

    # ------------------------------------------------------------ API ops

    async def _target_addrs(self, target: str, docker_host: str | None = None) -> list[str]:
        ps = self.ctx.api.handler("ps")
        rows = await ps({"targets": [target], "docker_host": docker_host}) if ps is not None else []
        ips = [names.check_ipv4(c) for r in rows for c in r.get("cidrs", [])]
        if not ips:
            raise NotFound(f"{target} has no address on the weave network",
                           fix="attach it first, or give the addresses: dns-add IP... TARGET")
        return ips

    def _parse(self, args: dict[str, Any], *, need_name: bool) -> tuple[str | None, str | None, list[str]]:
        addrs = args.get("addrs") or []
        target = args.get("target") or None
        hostname = args.get("hostname") or None
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise UsageError("addrs must be a list of IPv4 addresses")
        if target is not None and not isinstance(target, str):
            raise UsageError("target must be a string")
        ips = [names.check_ipv4(a, self.network) for a in addrs]
        if target is None and hostname is None:
            raise UsageError("give a TARGET or -h FQDN", fix="e.g. dns-add 10.32.1.5 -h db.weave.local")
        if target is None and need_name and not ips:
            raise UsageError("a name for something that is not a container needs its addresses",
                             fix="e.g. dns-add 10.32.1.5 -h db.weave.local")
        fqdn = None
        if hostname is not None:
            fqdn = names.qualify(hostname, self.domain)
        elif target is not None and need_name:
            label = names.label_from_target(target)
            if label is None:
                raise UsageError(f"{target} has no name of its own", fix=f"give one: dns-add {target} -h NAME")
            fqdn = names.qualify(label, self.domain)
        return fqdn, target, ips

    async def op_add(self, args: dict[str, Any]) -> dict[str, Any]:
        """``dns-add [IP...] TARGET [-h FQDN]`` or ``dns-add IP... -h FQDN``."""
        from weave_fdp.router.containers import resolve_target

        fqdn, target, ips = self._parse(args, need_name=True)
        assert fqdn is not None
        container = EXTERNAL
        if target is not None:
            path = await asyncio.to_thread(resolve_target, target, args.get("docker_host"))
            ips = ips or await self._target_addrs(target, args.get("docker_host"))
            container = target
            self._remember_target(target, path)
        self.add(fqdn, container, ips)
        return {"name": fqdn, "container": container, "addrs": ips}

    async def op_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        """``dns-remove [IP...] TARGET [-h FQDN]`` or ``dns-remove IP... -h FQDN``."""
        fqdn, target, ips = self._parse(args, need_name=False)
        container = target if target is not None else (EXTERNAL if ips else None)
        removed: list[Entry] = []
        for ip in ips or [None]:
            removed += self.remove(hostname=fqdn, container=container, addr=ip)
        if not removed:
            raise NotFound("no such name on this host",
                           fix="see `weave-fdp status dns` (a peer removes only the names it added)")
        return {"removed": [{"name": e.hostname, "container": e.container, "addr": e.addr} for e in removed]}

    async def op_lookup(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError("dns-lookup needs a name", fix="e.g. weave-fdp dns-lookup web")
        fqdn = names.qualify(name, self.domain)
        addrs = self.records.lookup(fqdn)
        if not addrs:
            raise NotFound(f"no address for {fqdn}", fix="see `weave-fdp status dns`")
        return {"name": fqdn, "addrs": shuffled(addrs, self.responder.rng)}

    async def op_kernel(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"on": bool}`` (optional): answers in the kernel on or off; -> their state."""
        if self.kernel is None:
            raise NotFound("weaveDNS answers nothing in the kernel here (no fastdp, or not serving)",
                           fix="launch without --no-fastdp")
        on = args.get("on")
        if on is not None:
            if not isinstance(on, bool):
                raise UsageError(f"dns-kernel: 'on' must be true or false, not {on!r}")
            await self.kernel.set_enabled(on)
        return {"on": self.kernel.enabled, "names": self.kernel.names}

    # ------------------------------------------------------------ report

    def report(self) -> dict[str, Any]:
        nick = {}
        if self.mesh is not None:
            nick = {n: e.nickname for n, e in self.mesh.topology.peers.items()}
        entries = [{"name": e.hostname, "container": e.container, "address": e.addr, "origin": e.origin,
                    "origin_nickname": nick.get(e.origin), "version": e.version, "live": e.live}
                   for e in self.records.entries()]
        return {"domain": self.domain, "ttl": self.ttl, "address": self.listen_ip, "port": self.listen_port,
                "serving": self.error is None, "error": self.error, "upstream": self.upstream.servers(),
                "rate_limit_qps": self.server.limiter.rate,
                "entries": [e for e in entries if e["live"]],
                "tombstones": sum(1 for e in entries if not e["live"]), "stats": self.server.stats(),
                "rebinds": self.rebinds,   # the server bound anew to a bridge made again
                # answers given in the kernel (None: no fastdp, the server answers everything)
                "kernel": self.kernel.stats() if self.kernel is not None else None}


def _bridge_ifindex() -> int:
    """The weave bridge's interface index here (0: none)."""
    from weave_fdp.plumbing.weave_bridge import BRIDGE

    try:
        return socket.if_nametoindex(BRIDGE)
    except OSError:
        return 0


def _same_namespace(info: dict[str, Any]) -> bool:
    """Is the namespace a target was attached with still there (the same one, not a reuse)?"""
    try:
        st = os.stat(info["path"])
    except (OSError, KeyError, TypeError):
        return False
    return [st.st_dev, st.st_ino] == list(info.get("ns") or [])
