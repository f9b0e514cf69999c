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
from typing import Any, Protocol

from weave_fdp.errors import ProtocolError
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import ConnEntry, Features, PeerEntry
from weave_fdp.router.mesh.gossip import GossipChannel, Gossiper
from weave_fdp.router.mesh.routes import Routes
from weave_fdp.router.mesh.topology import Topology

log = logging.getLogger(__name__)

TOPOLOGY = "topology"


@dataclass
class Identity:
    """Who this peer is (name persisted; uid and incarnation new per start)."""

    name: str
    nickname: str
    uid: int
    incarnation: int
    short_id: int


class Link(Protocol):
    """A handshaken connection to a neighbour, as the node sees it."""

    peer: str
    features: Features
    outbound: bool
    remote_host: str
    remote_port: int
    established: bool
    tx_bytes: int
    rx_bytes: int

    def send(self, tag: int, body: Any) -> None: ...

    def close(self, reason: str) -> None: ...


class MeshNode:
    """Topology, routes and gossip of the local peer."""

    def __init__(self, ident: Identity, *, port: int = 6783, conn_limit: int = 200,
                 gossip_interval: float = 30.0, recompute_delay: float = 0.005,
                 gossip_delay: float = 0.02, gc_grace: float = 3.0,
                 rng: random.Random | None = None) -> None:
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
                                           1, ident.short_id, ()))
        self.links: dict[str, Link] = {}
        self.routes = Routes(self.topology.peers, ident.name)
        self.channels: dict[str, GossipChannel] = {}
        self.listeners: list[Callable[[], None]] = []
        self.on_overlay_control: Callable[[str, bytes], None] | None = None
        self.on_link_change: Callable[[], None] | None = None
        self.started = time.monotonic()
        self.gossip_tx_bytes = 0
        self._encoder = codec.TopologyEncoder()
        self._pending: dict[str, set[str]] = {}     # link peer -> topology names to send
        self._known: dict[str, dict[str, tuple[int, int, int]]] = {}  # link peer -> name -> key it has
        self._flush_scheduled = False
        self._recompute_handle: asyncio.Handle | None = None
        self._periodic: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.gossip_interval > 0:
            self._periodic = asyncio.get_running_loop().create_task(self._periodic_gossip())

    def stop(self) -> None:
        if self._gc_handle:
            self._gc_handle.cancel()
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
        if name == TOPOLOGY or name in self.channels:
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
        self._known.pop(link.peer, None)
        log.info("peer %s(%s): connection %s %s:%d up", link.peer, link.features.nickname,
                 "to" if link.outbound else "from", link.remote_host, link.remote_port)
        self._send_topology(link, None)
        self._local_changed()
        return True

    def link_down(self, link: Link, reason: str) -> None:
        if self.links.get(link.peer) is not link:
            return
        del self.links[link.peer]
        self._pending.pop(link.peer, None)
        self._known.pop(link.peer, None)
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

    def _send_topology(self, link: Link, names: set[str] | None) -> None:
        known = self._known.setdefault(link.peer, {})
        entries = [e for e in self.topology.entries(names) if names is None or known.get(e.name, (-1,)) < e.key()]
        if not entries:
            return
        for e in entries:
            known[e.name] = e.key()
        payload = self._encoder.encode(entries)
        self._send(link, codec.GOSSIP, {"c": TOPOLOGY, "s": self.name, "p": payload})

    def _queue_topology(self, names: list[str], exclude: str | None) -> None:
        """Coalesce topology deltas per link; flushed after ``gossip_delay``.

        A short delay merges the bursts of changes a join causes (connection up,
        then established; several peers at once) into one message per link.
        """
        for peer in self.links:
            if peer != exclude:
                self._pending.setdefault(peer, set()).update(names)
        if not self._flush_scheduled and self._pending:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.gossip_delay, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for peer, names in pending.items():
            link = self.links.get(peer)
            if link is not None and names:
                self._send_topology(link, names)

    def _apply_topology(self, link: Link, payload: bytes) -> None:
        peers, me = self.topology.peers, self.name

        known = self._known.setdefault(link.peer, {})

        def wanted(name: str, key: tuple[int, int, int]) -> bool:
            if known.get(name, (-1,)) < key:
                known[name] = key  # the sender has it: never send it back
            old = peers.get(name)
            return old is None or name == me or key > old.key()

        entries = codec.decode_topology(payload, wanted)
        changed, self_bumped = self.topology.apply(entries)
        if self_bumped:
            self._queue_topology([self.name], exclude=None)
            changed = [n for n in changed if n != self.name]
        if changed:
            self._queue_topology(changed, exclude=link.peer)
            self._schedule_recompute()

    # ------------------------------------------------------------ recompute (debounced)

    def _schedule_recompute(self) -> None:
        if self._recompute_handle is None:
            self._recompute_handle = asyncio.get_running_loop().call_later(
                self.recompute_delay, self._recompute)

    def _recompute(self) -> None:
        self._recompute_handle = None
        loop = asyncio.get_running_loop()
        gone, next_due = self.topology.garbage_collect(loop.time(), self.gc_grace)
        if gone:
            # neighbours drop them too: forget that they hold them, or a returning
            # peer whose entry did not change would never be sent to them again
            for known in self._known.values():
                for n in gone:
                    known.pop(n, None)
            log.info("peers removed (unreachable for %g s): %s", self.gc_grace, ", ".join(sorted(gone)))
        if next_due is not None and self._gc_handle is None:
            def again() -> None:
                self._gc_handle = None
                self._schedule_recompute()
            self._gc_handle = loop.call_at(next_due + 0.01, again)
        if self.topology.resolve_short_id(self.rng):
            self._queue_topology([self.name], exclude=None)
        self.routes = Routes(self.topology.peers, self.name)
        for fn in list(self.listeners):
            try:
                fn()
            except Exception:
                log.exception("mesh listener failed")

    # ------------------------------------------------------------ generic gossip

    def _send(self, link: Link, tag: int, body: dict) -> None:
        link.send(tag, body)

    def send_gossip(self, channel: str, payload: bytes, exclude: str | None = None) -> None:
        for peer, link in list(self.links.items()):
            if peer != exclude:
                self._send(link, codec.GOSSIP, {"c": channel, "s": self.name, "p": payload})

    def send_broadcast(self, channel: str, payload: bytes, src: str | None = None) -> None:
        src = src or self.name
        for hop in self.routes.broadcast_from(src):
            link = self.links.get(hop)
            if link is not None:
                self._send(link, codec.GOSSIP_BROADCAST, {"c": channel, "s": src, "p": payload})

    def send_unicast(self, channel: str, dst: str, payload: bytes, src: str | None = None) -> bool:
        hop = self.routes.unicast.get(dst)
        link = self.links.get(hop) if hop else None
        if link is None:
            return False
        self._send(link, codec.GOSSIP_UNICAST, {"c": channel, "s": src or self.name, "d": dst, "p": payload})
        return True

    def send_overlay_control(self, peer: str, payload: bytes) -> bool:
        link = self.links.get(peer)
        if link is None:
            return False
        self._send(link, codec.OVERLAY_CONTROL, {"p": payload})
        return True

    def _gossip_message(self, link: Link, tag: int, body: dict) -> None:
        channel, src, payload = body["c"], body["s"], body["p"]
        if tag == codec.GOSSIP and channel == TOPOLOGY:
            self._apply_topology(link, payload)
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
        """Full state to a couple of random neighbours, so missed deltas heal."""
        while True:
            await asyncio.sleep(self.gossip_interval * self.rng.uniform(0.8, 1.2))
            links = list(self.links.values())
            for link in self.rng.sample(links, min(2, len(links))):
                self._send_topology(link, None)
                for ch in self.channels.values():
                    state = ch.gossiper.gossip()
                    if state:
                        self._send(link, codec.GOSSIP, {"c": ch.name, "s": self.name, "p": state})


def keep_new_link(local: str, remote: str, new_is_outbound: bool) -> bool:
    """Of two simultaneous links between local and remote, keep the one the smaller name dialed."""
    return new_is_outbound if local < remote else not new_is_outbound
