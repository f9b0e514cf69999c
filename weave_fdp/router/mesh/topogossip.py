"""Topology dissemination: what each neighbour holds, what to announce, push and ask for.

Protocol 1 links get entries pushed (every changed entry to every neighbour that is
not known to hold it). Protocol 2 links (docs/PROTOCOL.md, section 7) get
*digests*: 30-byte (name, key) records of the entries that changed, coalesced for
``delay`` seconds; a neighbour that lacks one asks the first announcer for it and
waits ``request_timeout`` before asking another. So each entry version crosses the
mesh about once per peer instead of once per link, and what crosses every link is
30 bytes instead of the entry. A new link exchanges full digests (each side pushes
what the other lacks); periodic gossip sends a 21-byte summary (count and
fingerprint of the whole view), answered with full digests only on a mismatch.

Pure bookkeeping over a ``TopologyHost`` (link.py: links, topology, send); no I/O of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import Key, PeerEntry
from weave_fdp.router.mesh.link import Link, TopologyHost

log = logging.getLogger(__name__)

TOPOLOGY = "topology"
REQUEST_TIMEOUT = 5.0   # s before asking another neighbour for an entry that did not come
NONE_KEY: Key = (-1, -1, -1)


def uses_digests(link: Link) -> bool:
    return getattr(link, "protocol_version", codec.PROTOCOL_MAX) >= codec.DIGEST_VERSION


class TopologyGossip:
    """Per-neighbour knowledge and the messages of the topology channels."""

    def __init__(self, node: TopologyHost, delay: float, request_timeout: float = REQUEST_TIMEOUT,
                 intern: Callable[[PeerEntry], PeerEntry] | None = None) -> None:
        """``intern``: maps a decoded entry to an equal one to keep instead (a simulation of
        thousands of peers in one process shares equal entries among them; None: keep it)."""
        self.node = node
        self.intern = intern
        self.delay = delay
        self.request_timeout = request_timeout
        self.encoder = codec.TopologyEncoder()
        self.known: dict[str, dict[str, Key]] = {}       # link peer -> name -> newest key it holds
        self.pending: dict[str, set[str]] = {}           # link peer -> names to announce/push
        self.requested: dict[str, tuple[Key, float, str]] = {}  # name -> (key wanted, deadline, asked)
        self._flush_scheduled = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self.stats = {"entries_sent": 0, "digest_records_sent": 0, "requests_sent": 0, "re_requests": 0}

    # ------------------------------------------------------------ links

    def link_up(self, link: Link) -> None:
        self.known.pop(link.peer, None)
        if uses_digests(link):
            self._send_digest(link, codec.DIGEST_FULL, self._all_keys())
        else:
            self.push(link, None)

    def link_down(self, link: Link) -> None:
        self.pending.pop(link.peer, None)
        self.known.pop(link.peer, None)
        lost = [n for n, (_, _, asked) in self.requested.items() if asked == link.peer]
        if lost:
            self._retry(lost)

    def stop(self) -> None:
        if self._retry_handle:
            self._retry_handle.cancel()

    def forget(self, names: list[str]) -> None:
        """Peers we removed: neighbours drop them too, so a returning peer whose entry did
        not change must be sent to them again."""
        for known in self.known.values():
            for n in names:
                known.pop(n, None)
        for n in names:
            self.requested.pop(n, None)

    # ------------------------------------------------------------ triggered gossip

    def changed(self, names: list[str], exclude: str | None) -> None:
        """Entries that changed here: announce (or push) them to every other neighbour, coalesced."""
        for peer in self.node.links:
            if peer != exclude:
                self.pending.setdefault(peer, set()).update(names)
        if not self._flush_scheduled and self.pending:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.delay, self._flush)

    def quiet(self) -> bool:
        """Nothing waiting to be announced."""
        return not self._flush_scheduled

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self.pending = self.pending, {}
        peers = self.node.topology.peers
        for peer, names in pending.items():
            link = self.node.links.get(peer)
            if link is None or not names:
                continue
            if not uses_digests(link):
                self.push(link, names)
                continue
            known = self.known.setdefault(peer, {})
            items = []
            for n in names:
                e = peers.get(n)
                if e is not None and known.get(n, NONE_KEY) < (key := e.key()):
                    items.append((n, key))
            if items:
                self._send_digest(link, codec.DIGEST_DELTA, items)

    # ------------------------------------------------------------ sending

    def _all_keys(self) -> list[tuple[str, Key]]:
        return [(n, e.key()) for n, e in self.node.topology.peers.items()]

    def _send_digest(self, link: Link, kind: int, items: list[tuple[str, Key]]) -> None:
        self.stats["digest_records_sent"] += len(items)
        self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": self.node.name,
                                             "p": codec.encode_digest(kind, items)})

    def push(self, link: Link, names: set[str] | list[str] | None) -> None:
        """Send entries (all when ``names`` is None), skipping those the neighbour holds."""
        known = self.known.setdefault(link.peer, {})
        entries = [e for e in self.node.topology.entries(names)
                   if names is None or known.get(e.name, NONE_KEY) < e.key()]
        if not entries:
            return
        for e in entries:
            known[e.name] = e.key()
        self.stats["entries_sent"] += len(entries)
        self.node.send(link, codec.GOSSIP, {"c": TOPOLOGY, "s": self.node.name,
                                             "p": self.encoder.encode(entries)})

    def periodic(self, link: Link) -> None:
        """The periodic round to one neighbour: a summary (protocol 2) or everything (1)."""
        if uses_digests(link):
            self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": self.node.name,
                                                 "p": codec.encode_summary(self._all_keys())})
        else:
            self.push(link, None)

    # ------------------------------------------------------------ receiving

    def on_message(self, link: Link, channel: str, payload: bytes) -> bool:
        """Handle a topology channel message; False when ``channel`` is not one of ours."""
        if channel == TOPOLOGY:
            self.on_entries(link, payload)
        elif channel == codec.TOPOLOGY_DIGEST:
            self.on_digest(link, payload)
        elif channel == codec.TOPOLOGY_REQUEST:
            self.on_request(link, payload)
        else:
            return False
        return True

    def on_entries(self, link: Link, payload: bytes) -> None:
        peers, me = self.node.topology.peers, self.node.name
        known = self.known.setdefault(link.peer, {})

        def wanted(name: str, key: Key) -> bool:
            if known.get(name, NONE_KEY) < key:
                known[name] = key  # the sender has it: never send it back
            old = peers.get(name)
            return old is None or name == me or key > old.key()

        entries = codec.decode_topology(payload, wanted)
        if self.intern is not None:
            entries = [self.intern(e) for e in entries]
        self.node.merge(link, entries)
        if self.requested:
            for e in entries:
                r = self.requested.get(e.name)
                if r is not None and (cur := peers.get(e.name)) is not None and cur.key() >= r[0]:
                    del self.requested[e.name]

    def on_digest(self, link: Link, payload: bytes) -> None:
        kind, body = codec.decode_digest(payload)
        peers = self.node.topology.peers
        if kind == codec.DIGEST_SUMMARY:
            count, fp = body  # type: ignore[misc]
            ours = self._all_keys()
            if count == len(ours) and fp == codec.fingerprint(ours):
                self.known[link.peer] = dict(ours)   # same view: it holds exactly what we hold
            else:
                self._send_digest(link, codec.DIGEST_FULL_REPLY, ours)
            return
        items: list[tuple[str, Key]] = body  # type: ignore[assignment]
        if kind == codec.DIGEST_DELTA:
            self._on_delta(link, items)
            return
        # a full view: it holds exactly these; push what it lacks (it pushes what we lack,
        # having our full digest from the link's start, or from the reply below)
        theirs = {}
        for n, k in items:
            e = peers.get(n)
            theirs[n] = e.key() if e is not None and e.key() == k else k   # (one key object where equal)
        self.known[link.peer] = theirs
        lacking = [n for n, e in peers.items() if theirs.get(n, NONE_KEY) < e.key()]
        if kind == codec.DIGEST_FULL_REPLY:
            self._send_digest(link, codec.DIGEST_FULL, self._all_keys())
        if lacking:
            self.push(link, lacking)

    def _on_delta(self, link: Link, items: list[tuple[str, Key]]) -> None:
        peers, me = self.node.topology.peers, self.node.name
        known = self.known.setdefault(link.peer, {})
        now = asyncio.get_running_loop().time()
        ask: list[str] = []
        stale_of_us = False
        for name, key in items:
            old = peers.get(name)
            ours = old.key() if old is not None else NONE_KEY
            if known.get(name, NONE_KEY) < key:
                known[name] = ours if key == ours else key   # (ours: one key object, not one per link)
            if key == ours:
                continue
            if name == me and key < ours:
                stale_of_us = True   # it holds an old copy of us: give it the current one
                continue
            if key < ours:
                continue
            r = self.requested.get(name)
            if r is not None and r[0] >= key and r[1] > now:
                continue  # already asked someone for it (or newer): wait for that
            self.requested[name] = (key, now + self.request_timeout, link.peer)
            ask.append(name)
        if stale_of_us:
            known[me] = NONE_KEY
            self.push(link, [me])
        if ask:
            self._request(link, ask)

    def on_request(self, link: Link, payload: bytes) -> None:
        names = codec.decode_request(payload)
        known = self.known.setdefault(link.peer, {})
        for n in names:
            known.pop(n, None)   # it says it lacks them, whatever we thought
        self.push(link, names)

    # ------------------------------------------------------------ requests

    def _request(self, link: Link, names: list[str]) -> None:
        self.stats["requests_sent"] += len(names)
        self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_REQUEST, "s": self.node.name,
                                             "p": codec.encode_request(names)})
        self._schedule_retry(asyncio.get_running_loop().time() + self.request_timeout)

    def _schedule_retry(self, due: float | None = None) -> None:
        """One timer, at the earliest deadline of the outstanding requests (``due``: that of
        a request just made, so the others need no scan)."""
        if not self.requested:
            return
        if due is None:
            due = min(d for _, d, _ in self.requested.values())
        due += 0.001
        if self._retry_handle is not None:
            if self._retry_handle.when() <= due:
                return
            self._retry_handle.cancel()
        self._retry_handle = asyncio.get_running_loop().call_at(due, self._on_retry_timer)

    def _on_retry_timer(self) -> None:
        self._retry_handle = None
        now = asyncio.get_running_loop().time()
        self._retry([n for n, (_, d, _) in self.requested.items() if d <= now])
        self._schedule_retry()

    def _retry(self, names: list[str]) -> None:
        """Ask another neighbour that announced the entry; give up when none did
        (periodic gossip heals that)."""
        peers, now = self.node.topology.peers, asyncio.get_running_loop().time()
        by_link: dict[str, list[str]] = {}
        for n in names:
            r = self.requested.pop(n, None)
            if r is None:
                continue
            key, _, asked = r
            cur = peers.get(n)
            if cur is not None and cur.key() >= key:
                continue
            alt = [p for p in self.node.links if p != asked and self.known.get(p, {}).get(n, NONE_KEY) >= key]
            if not alt:
                continue
            p = self.node.rng.choice(sorted(alt))
            self.requested[n] = (key, now + self.request_timeout, p)
            by_link.setdefault(p, []).append(n)
        for p, ns in by_link.items():
            self.stats["re_requests"] += len(ns)
            self._request(self.node.links[p], ns)

    def status(self) -> dict[str, Any]:
        return {**self.stats, "outstanding_requests": len(self.requested)}
