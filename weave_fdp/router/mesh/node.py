"""One peer of the mesh: its links, topology, routes and gossip, independent of transport.

The TCP transport (transport.py) and the in-memory one (sim.py) both hand it
handshaken ``Link`` objects and the messages that arrive on them. Everything
here runs on one asyncio loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weave_fdp.errors import ProtocolError
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import ConnEntry, Features, PeerEntry
from weave_fdp.router.mesh.gossip import GossipChannel, Gossiper
from weave_fdp.router.mesh.link import Link
from weave_fdp.router.mesh.routes import Routes
from weave_fdp.router.mesh.topogossip import TOPOLOGY, TopologyGossip
from weave_fdp.router.mesh.topology import Topology

log = logging.getLogger(__name__)

RECOMPUTE_COST_FACTOR = 20   # wait this many times the last recompute's duration before the next
RECOMPUTE_MAX_DELAY = 0.1    # s; but never longer than this
RESERVED_CHANNELS = (TOPOLOGY, codec.TOPOLOGY_DIGEST, codec.TOPOLOGY_REQUEST)


@dataclass
class Identity:
    """Who this peer is (name persisted; uid and incarnation new per start)."""

    name: str
    nickname: str
    uid: int
    incarnation: int
    short_id: int


class MeshNode:
    """Topology, routes and gossip of the local peer."""

    def __init__(self, ident: Identity, *, port: int = 6783, conn_limit: int = 200,
                 gossip_interval: float = 30.0, recompute_delay: float = 0.005,
                 gossip_delay: float = 0.02, gc_grace: float = 3.0,
                 rng: random.Random | None = None,
                 intern_entry: Callable[[PeerEntry], PeerEntry] | None = None,
                 intern_row: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None) -> None:
        """``intern_entry``, ``intern_row``: see TopologyGossip and Topology (simulations only)."""
        self.ident = ident
        self.port = port
        self.conn_limit = conn_limit
        self.gossip_interval = gossip_interval
        self.recompute_delay = recompute_delay
        self.gossip_delay = gossip_delay
        self.gc_grace = gc_grace
        self._gc_handle: asyncio.TimerHandle | None = None
        self.rng = rng or random.Random()
        self.topology = Topology(PeerEntry(ident.name, ident.nickname, ident.uid, ident.incarnation,
                                           1, ident.short_id, ()), intern_row)
        self.links: dict[str, Link] = {}
        self.routes = Routes(self.topology.peers, ident.name, self.topology.graph())
        self.channels: dict[str, GossipChannel] = {}
        self.listeners: list[Callable[[], None]] = []
        self.on_overlay_control: Callable[[str, bytes], None] | None = None
        self.on_link_change: Callable[[], None] | None = None
        self.started = time.monotonic()
        self.gossip_tx_bytes = 0
        self.terminations = 0            # established links that went down (weave_connection_terminations_total)
        self.topology_changed_at = 0.0   # loop time of the last received change (benchmarks)
        self.topo_gossip = TopologyGossip(self, gossip_delay, intern=intern_entry)
        self._recompute_handle: asyncio.Handle | None = None
        self._recompute_cost = 0.0   # s the last recompute took
        self._periodic: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.gossip_interval > 0:
            self._periodic = asyncio.get_running_loop().create_task(self._periodic_gossip())

    def stop(self) -> None:
        if self._gc_handle:
            self._gc_handle.cancel()
        self.topo_gossip.stop()
        if self._periodic:
            self._periodic.cancel()
        for link in list(self.links.values()):
            link.close("router stopping")

    @property
    def name(self) -> str:
        return self.ident.name

    def features(self, conn_id: int, trusted: bool, overlays: tuple[str, ...], version: str) -> Features:
        local = self.topology.local
        return Features(self.name, self.ident.nickname, self.ident.uid, local.incarnation,
                        local.short_id, conn_id, overlays, trusted, self.port, version)

    def register_channel(self, name: str, gossiper: Gossiper) -> GossipChannel:
        if name in RESERVED_CHANNELS or name in self.channels:
            raise ValueError(f"gossip channel {name!r} already registered")
        ch = GossipChannel(self, name, gossiper)
        self.channels[name] = ch
        return ch

    # ------------------------------------------------------------ links

    def admit(self, link: Link) -> str | None:
        """Decide on a freshly handshaken link; None to keep it, else the reason to drop it.

        Duplicate connections to one peer: the one dialed by the peer with the smaller
        name wins, so both ends keep the same TCP connection. A link from a new
        incarnation, or in the same direction as the old one, replaces the old (the
        old is probably dead: the peer would not redial a live one).
        """
        f = link.features
        if f.name == self.name:
            return "connected to ourselves"
        old = self.links.get(f.name)
        if old is not None:
            if old.features.uid == f.uid and old.outbound != link.outbound:
                if not keep_new_link(self.name, f.name, link.outbound):
                    return f"duplicate connection to {f.name}({f.nickname}); keeping the other one"
            old.close(f"replaced by a newer connection from {f.name}")
            self.links.pop(f.name, None)
        elif len(self.links) >= self.conn_limit:
            return f"connection limit reached ({self.conn_limit}); raise it with --conn-limit"
        return None

    def link_up(self, link: Link) -> bool:
        reason = self.admit(link)
        if reason is not None:
            log.info("peer %s: dropping connection %s:%d: %s", link.features.name,
                     link.remote_host, link.remote_port, reason)
            link.close(reason)
            return False
        self.links[link.peer] = link
        log.info("peer %s(%s): connection %s %s:%d up", link.peer, link.features.nickname,
                 "to" if link.outbound else "from", link.remote_host, link.remote_port)
        self.topo_gossip.link_up(link)
        self._local_changed()
        return True

    def link_down(self, link: Link, reason: str) -> None:
        if self.links.get(link.peer) is not link:
            return
        del self.links[link.peer]
        self.terminations += 1
        self.topo_gossip.link_down(link)
        log.info("peer %s(%s): connection %s:%d down: %s", link.peer, link.features.nickname,
                 link.remote_host, link.remote_port, reason)
        self._local_changed()

    def link_message(self, link: Link, tag: int, body: dict) -> None:
        """A validated message from a kept link (codec.decode_message did the checks)."""
        if self.links.get(link.peer) is not link:
            return
        if not link.established:
            link.established = True
            if self.on_link_change:
                self.on_link_change()
        if tag == codec.HEARTBEAT:
            return
        if tag == codec.OVERLAY_CONTROL:
            if self.on_overlay_control:
                self.on_overlay_control(link.peer, body["p"])
            return
        if tag == codec.CLOSE:
            link.close(f"peer closed: {body['r']}")
            return
        try:
            self._gossip_message(link, tag, body)
        except ProtocolError as exc:
            link.close(str(exc))

    def _local_conns(self) -> list[ConnEntry]:
        # the address is the peer's dialable one (its listen port), so others can discover it
        # Announced as established from the handshake on: both ends pick the same link
        # of a duplicate pair, and routes need both ends to announce each other anyway.
        # (link.established, shown in status, still waits for the first message.)
        return [ConnEntry(l.peer, f"{l.remote_host}:{l.remote_port if l.outbound else l.features.port}",
                          l.outbound, True) for l in self.links.values()]

    def _local_changed(self) -> None:
        if self.topology.set_local_connections(self._local_conns()):
            self._queue_topology([self.name], exclude=None)
        self._schedule_recompute()
        if self.on_link_change:
            self.on_link_change()

    # ------------------------------------------------------------ topology gossip

    def _queue_topology(self, names: list[str], exclude: str | None) -> None:
        self.topo_gossip.changed(names, exclude)

    def merge(self, link: Link, entries: list[PeerEntry]) -> None:
        """Entries received from ``link``: keep the newer ones, pass those on, recompute."""
        changed, self_bumped = self.topology.apply(entries)
        if self_bumped:
            self._queue_topology([self.name], exclude=None)
            changed = [n for n in changed if n != self.name]
        if changed:
            self.topology_changed_at = asyncio.get_running_loop().time()
            self._queue_topology(changed, exclude=link.peer)
            self._schedule_recompute()

    def quiet(self) -> bool:
        """No topology gossip and no route recompute pending (simulations wait for this)."""
        return self._recompute_handle is None and self.topo_gossip.quiet()

    # ------------------------------------------------------------ recompute (debounced)

    def _schedule_recompute(self) -> None:
        """Recompute routes soon: after ``recompute_delay``, or RECOMPUTE_COST_FACTOR times the
        last recompute's duration when that is longer, so that a burst of topology changes
        in a large mesh costs a bounded share of the CPU (gossip itself never waits for it)."""
        if self._recompute_handle is None:
            delay = min(RECOMPUTE_MAX_DELAY, max(self.recompute_delay,
                                                 RECOMPUTE_COST_FACTOR * self._recompute_cost))
            self._recompute_handle = asyncio.get_running_loop().call_later(delay, self._recompute)

    def _recompute(self) -> None:
        started = time.perf_counter()
        try:
            self._recompute_inner()
        finally:
            self._recompute_cost = time.perf_counter() - started

    def _recompute_inner(self) -> None:
        self._recompute_handle = None
        loop = asyncio.get_running_loop()
        if self.topology.resolve_short_id(self.rng):
            self._queue_topology([self.name], exclude=None)
        peers = self.topology.peers
        routes = Routes(peers, self.name, self.topology.graph())
        # everyone reachable over symmetric links is reachable over announced ones:
        # the GC walk is needed only when someone is not (or was not, last time)
        if len(routes.unicast) + 1 < len(peers) or self.topology.has_unreachable:
            gone, next_due = self.topology.garbage_collect(loop.time(), self.gc_grace)
            if gone:
                # neighbours drop them too: forget that they hold them, or a returning
                # peer whose entry did not change would never be sent to them again
                self.topo_gossip.forget(gone)
                log.info("peers removed (unreachable for %g s): %s", self.gc_grace, ", ".join(sorted(gone)))
                routes = Routes(peers, self.name, self.topology.graph())
            if next_due is not None and self._gc_handle is None:
                def again() -> None:
                    self._gc_handle = None
                    self._schedule_recompute()
                self._gc_handle = loop.call_at(next_due + 0.01, again)
        self.routes = routes
        for fn in list(self.listeners):
            try:
                fn()
            except Exception:
                log.exception("mesh listener failed")

    # ------------------------------------------------------------ generic gossip

    def send(self, link: Link, tag: int, body: dict) -> None:
        link.send(tag, body)

    def send_gossip(self, channel: str, payload: bytes, exclude: str | None = None) -> None:
        for peer, link in list(self.links.items()):
            if peer != exclude:
                self.send(link, codec.GOSSIP, {"c": channel, "s": self.name, "p": payload})

    def send_broadcast(self, channel: str, payload: bytes, src: str | None = None) -> None:
        src = src or self.name
        for hop in self.routes.broadcast_from(src):
            link = self.links.get(hop)
            if link is not None:
                self.send(link, codec.GOSSIP_BROADCAST, {"c": channel, "s": src, "p": payload})

    def send_unicast(self, channel: str, dst: str, payload: bytes, src: str | None = None) -> bool:
        hop = self.routes.unicast.get(dst)
        link = self.links.get(hop) if hop else None
        if link is None:
            return False
        self.send(link, codec.GOSSIP_UNICAST, {"c": channel, "s": src or self.name, "d": dst, "p": payload})
        return True

    def send_overlay_control(self, peer: str, payload: bytes) -> bool:
        link = self.links.get(peer)
        if link is None:
            return False
        self.send(link, codec.OVERLAY_CONTROL, {"p": payload})
        return True

    def _gossip_message(self, link: Link, tag: int, body: dict) -> None:
        channel, src, payload = body["c"], body["s"], body["p"]
        if tag == codec.GOSSIP and self.topo_gossip.on_message(link, channel, payload):
            return
        ch = self.channels.get(channel)
        if tag == codec.GOSSIP:
            if ch is not None:
                delta = ch.gossiper.on_gossip(src, payload)
                if delta:
                    self.send_gossip(channel, delta, exclude=link.peer)
        elif tag == codec.GOSSIP_BROADCAST:
            if src == self.name:
                return
            if ch is not None:
                ch.gossiper.on_gossip_broadcast(src, payload)
            self.send_broadcast(channel, payload, src=src)
        elif tag == codec.GOSSIP_UNICAST:
            dst = body["d"]
            if dst == self.name:
                if ch is not None:
                    ch.gossiper.on_gossip_unicast(src, payload)
            else:
                self.send_unicast(channel, dst, payload, src=src)

    async def _periodic_gossip(self) -> None:
        """Every interval (+-20%), a gossip round: see :meth:`gossip_round`."""
        while True:
            await asyncio.sleep(self.gossip_interval * self.rng.uniform(0.8, 1.2))
            self.gossip_round()

    def gossip_round(self) -> None:
        """Topology summary and each channel's full state to two random neighbours, so missed
        deltas heal (a topology summary costs 24 bytes when both views agree)."""
        links = list(self.links.values())
        for link in self.rng.sample(links, min(2, len(links))):
            self.topo_gossip.periodic(link)
            for ch in self.channels.values():
                state = ch.gossiper.gossip()
                if state:
                    self.send(link, codec.GOSSIP, {"c": ch.name, "s": self.name, "p": state})


def keep_new_link(local: str, remote: str, new_is_outbound: bool) -> bool:
    """Of two simultaneous links between local and remote, keep the one the smaller name dialed."""
    return new_is_outbound if local < remote else not new_is_outbound
