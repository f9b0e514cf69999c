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

What each neighbour holds is kept per entry, not per (neighbour, entry): a bitmask of
the links known to hold our current copy (``holds``; each link has a bit), and, for
the few entries some neighbour announced newer than ours, what it announced
(``ahead``). Digests are compared as packed records (bytes compare as the keys do),
so a record we already hold costs a slice and a dict lookup.

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


def version(link: Link) -> int:
    return getattr(link, "protocol_version", codec.PROTOCOL_MAX)


def uses_digests(link: Link) -> bool:
    return version(link) >= codec.DIGEST_VERSION


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
        self.slots: dict[str, int] = {}                  # link peer -> its bit in ``holds``
        self.holds: dict[bytes, int] = {}                # name -> links known to hold our current copy
        self.ahead: dict[bytes, dict[str, bytes]] = {}   # name -> link peer -> newer record it announced
        self.pending: set[str] = set()                   # names to announce/push at the next flush
        self.pending_links: set[str] = set()             # ... to these neighbours (those that lack them)
        self.requested: dict[bytes, tuple[bytes, float, str]] = {}  # name -> (record wanted, deadline, asked)
        self._flush_scheduled = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self.stats = {"entries_sent": 0, "digest_records_sent": 0, "requests_sent": 0, "re_requests": 0}

    # ------------------------------------------------------------ what neighbours hold

    def _slot(self, peer: str) -> int:
        """The bit of ``peer``'s link, cleared everywhere (a new link knows nothing yet)."""
        bit = self.slots.get(peer)
        if bit is None:
            used = set(self.slots.values())
            bit = 1
            while bit in used:
                bit <<= 1
            self.slots[peer] = bit
        else:
            self._clear(peer, bit)
        return bit

    def _clear(self, peer: str, bit: int) -> None:
        holds = self.holds
        for nb, m in holds.items():
            if m & bit:
                holds[nb] = m ^ bit
        for a in self.ahead.values():
            a.pop(peer, None)

    def _holding(self, peer: str, nb: bytes) -> bool:
        """``peer`` is known to hold our current copy of ``nb`` or a newer one."""
        if self.holds.get(nb, 0) & self.slots.get(peer, 0):
            return True
        a = self.ahead.get(nb)
        return a is not None and peer in a

    def holds_current(self, peer: str, name: str) -> bool:
        """``peer`` is known to hold exactly our current copy of ``name``'s entry."""
        return bool(self.holds.get(codec.name_to_bytes(name), 0) & self.slots.get(peer, 0))

    def _adopted(self, e: PeerEntry, bit: int) -> None:
        """Our copy of ``e.name`` is now ``e``: known holders are ``bit`` and those that
        announced exactly it."""
        nb = e.nb
        a = self.ahead.get(nb)
        if a is not None:
            rec = e.record
            for p, r in list(a.items()):
                if r <= rec:
                    del a[p]
                    if r == rec:
                        bit |= self.slots.get(p, 0)
            if not a:
                del self.ahead[nb]
        self.holds[nb] = bit

    # ------------------------------------------------------------ links

    def link_up(self, link: Link) -> None:
        self._slot(link.peer)
        if uses_digests(link):
            self._send_digest(link, codec.DIGEST_FULL, self._all_records())
        else:
            self.push(link, None)

    def link_down(self, link: Link) -> None:
        self.pending_links.discard(link.peer)
        bit = self.slots.pop(link.peer, None)
        if bit is not None:
            self._clear(link.peer, bit)
        lost = [n for n, (_, _, asked) in self.requested.items() if asked == link.peer]
        if lost:
            self._retry(lost)

    def stop(self) -> None:
        if self._retry_handle:
            self._retry_handle.cancel()

    def forget(self, names: list[str]) -> None:
        """Peers we removed: neighbours drop them too, so a returning peer whose entry did
        not change must be sent to them again."""
        for n in names:
            nb = codec.name_to_bytes(n)
            self.holds.pop(nb, None)
            self.ahead.pop(nb, None)
            self.requested.pop(nb, None)

    # ------------------------------------------------------------ triggered gossip

    def changed(self, names: list[str], exclude: str | None) -> None:
        """Entries that changed here (``exclude``: the neighbour they came from, which holds
        them): announce (or push) them to every other neighbour, coalesced."""
        peers, holds, ahead = self.node.topology.peers, self.holds, self.ahead
        bit = self.slots.get(exclude, 0) if exclude is not None else 0
        for n in names:
            e = peers.get(n)
            if e is None:
                continue
            if ahead and e.nb in ahead:
                self._adopted(e, bit)
            else:
                holds[e.nb] = bit
        self.pending.update(names)
        self.pending_links.update(p for p in self.node.links if p != exclude)
        if not self._flush_scheduled and self.pending_links:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.delay, self._flush)

    def quiet(self) -> bool:
        """Nothing waiting to be announced."""
        return not self._flush_scheduled

    def _flush(self) -> None:
        """One delta per neighbour of the changed records it is not known to hold (the
        neighbour a change came from holds it: see _adopted)."""
        self._flush_scheduled = False
        names, self.pending = self.pending, set()
        targets, self.pending_links = self.pending_links, set()
        peers, holds, ahead = self.node.topology.peers, self.holds, self.ahead
        entries = [e for n in names if (e := peers.get(n)) is not None]
        for peer, link in self.node.links.items():
            if peer not in targets:
                continue
            if not uses_digests(link):
                self.push(link, names)
                continue
            bit = self.slots.get(peer, 0)
            recs = [e.record for e in entries if not holds.get(e.nb, 0) & bit]
            if ahead:
                recs = [r for r in recs if peer not in ahead.get(r[:codec.NAME_BYTES], ())]
            if recs:
                self._send_digest(link, codec.DIGEST_DELTA, recs)

    # ------------------------------------------------------------ sending

    def _all_records(self) -> list[bytes]:
        return list(self.node.topology.records.values())

    def _send_digest(self, link: Link, kind: int, records: list[bytes]) -> None:
        self.stats["digest_records_sent"] += len(records)
        self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": self.node.name,
                                             "p": bytes([kind]) + b"".join(records)})

    def push(self, link: Link, names: set[str] | list[str] | None) -> None:
        """Send entries (all when ``names`` is None), skipping those the neighbour holds."""
        peer, holds, ahead = link.peer, self.holds, self.ahead
        bit = self.slots.get(peer, 0)
        entries = self.node.topology.entries(names)
        if names is not None:
            entries = [e for e in entries if not holds.get(e.nb, 0) & bit
                       and not (ahead and peer in ahead.get(e.nb, ()))]
        if not entries:
            return
        for e in entries:
            if ahead and (a := ahead.get(e.nb)) is not None:
                a.pop(peer, None)
            holds[e.nb] = holds.get(e.nb, 0) | bit
        self.stats["entries_sent"] += len(entries)
        self.node.send(link, codec.GOSSIP, {"c": TOPOLOGY, "s": self.node.name,
                                             "p": self.encoder.encode(entries, version(link))})

    def periodic(self, link: Link) -> None:
        """The periodic round to one neighbour: a summary (protocol 2) or everything (1)."""
        if uses_digests(link):
            topo = self.node.topology
            self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": self.node.name,
                                                 "p": bytes([codec.DIGEST_SUMMARY]) + codec.SUMMARY.pack(
                                                     len(topo.records), topo.fingerprint())})
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
        holds, bit = self.holds, self.slots.get(link.peer, 0)

        def wanted(name: str, key: Key) -> bool:
            old = peers.get(name)
            if old is None:
                return True
            ours = old.key()
            if key == ours:
                m = holds.get(old.nb, 0)
                if not m & bit:
                    holds[old.nb] = m | bit   # the sender has it: never send it back
                return name == me
            # a newer one is merged (merge -> changed() records the sender as its holder)
            return key > ours or name == me

        if version(link) >= codec.BINARY_ENTRIES_VERSION:
            entries = codec.decode_topology_v3(payload, wanted)
        else:
            entries = codec.decode_topology(payload, wanted)
        if self.intern is not None:
            entries = [self.intern(e) for e in entries]
        self.node.merge(link, entries)
        if self.requested:
            recs = self.node.topology.records
            for e in entries:
                r = self.requested.get(e.nb)
                if r is not None and (cur := recs.get(e.nb)) is not None and cur >= r[0]:
                    del self.requested[e.nb]

    def on_digest(self, link: Link, payload: bytes) -> None:
        kind, body = codec.split_digest(payload)
        if kind == codec.DIGEST_SUMMARY:
            count, fp = codec.SUMMARY.unpack(body)
            topo = self.node.topology
            if count == len(topo.records) and fp == topo.fingerprint():
                self._holds_all(link.peer)   # same view: it holds exactly what we hold
            else:
                self._send_digest(link, codec.DIGEST_FULL_REPLY, self._all_records())
            return
        if kind == codec.DIGEST_DELTA:
            self._on_delta(link, body)
            return
        # a full view: it holds exactly these; push what it lacks (it pushes what we lack,
        # having our full digest from the link's start, or from the reply below)
        size = codec.DIGEST_RECORD.size
        theirs = {body[i:i + codec.NAME_BYTES]: body[i:i + size] for i in range(0, len(body), size)}
        peer, bit = link.peer, self.slots.get(link.peer, 0)
        holds, peers = self.holds, self.node.topology.peers
        for a in self.ahead.values():
            a.pop(peer, None)
        lacking = []
        for n, e in peers.items():
            nb = e.nb
            t = theirs.pop(nb, None)
            if t == e.record:
                holds[nb] = holds.get(nb, 0) | bit
                continue
            holds[nb] = holds.get(nb, 0) & ~bit
            if t is None or t < e.record:
                lacking.append(n)
            else:
                self.ahead.setdefault(nb, {})[peer] = t
        for nb, t in theirs.items():   # entries we lack: it is ahead of us on those
            self.ahead.setdefault(nb, {})[peer] = t
        if kind == codec.DIGEST_FULL_REPLY:
            self._send_digest(link, codec.DIGEST_FULL, self._all_records())
        if lacking:
            self.push(link, lacking)

    def _holds_all(self, peer: str) -> None:
        bit, holds = self.slots.get(peer, 0), self.holds
        for nb in self.node.topology.records:
            holds[nb] = holds.get(nb, 0) | bit
        for a in self.ahead.values():
            a.pop(peer, None)

    def _on_delta(self, link: Link, body: bytes) -> None:
        """Records some entries' newer versions: ask ``link`` for those we lack (packed
        records: compared as bytes, the name first, then the key)."""
        recs, holds, requested = self.node.topology.records, self.holds, self.requested
        me = self.node.topology.local.nb
        peer, bit = link.peer, self.slots.get(link.peer, 0)
        size, nlen = codec.DIGEST_RECORD.size, codec.NAME_BYTES
        now = asyncio.get_running_loop().time()
        ask: list[bytes] = []
        stale_of_us = False
        for i in range(0, len(body), size):
            rec = body[i:i + size]
            nb = rec[:nlen]
            ours = recs.get(nb)
            if rec == ours:
                m = holds.get(nb, 0)
                if not m & bit:
                    holds[nb] = m | bit
                continue
            if ours is not None and rec < ours:
                if nb == me:
                    stale_of_us = True   # it holds an old copy of us: give it the current one
                continue
            a = self.ahead.setdefault(nb, {})
            if a.get(peer, b"") < rec:
                a[peer] = rec
            r = requested.get(nb)
            if r is not None and r[0] >= rec and r[1] > now:
                continue  # already asked someone for it (or newer): wait for that
            requested[nb] = (rec, now + self.request_timeout, peer)
            ask.append(nb)
        if stale_of_us:
            if me in holds:
                holds[me] &= ~bit
            self.push(link, [self.node.name])
        if ask:
            self._request(link, ask)

    def on_request(self, link: Link, payload: bytes) -> None:
        names = codec.decode_request(payload)
        peer, bit = link.peer, self.slots.get(link.peer, 0)
        for n in names:   # it says it lacks them, whatever we thought
            nb = codec.name_to_bytes(n)
            if nb in self.holds:
                self.holds[nb] &= ~bit
            if (a := self.ahead.get(nb)) is not None:
                a.pop(peer, None)
        self.push(link, names)

    # ------------------------------------------------------------ requests

    def _request(self, link: Link, names: list[bytes]) -> None:
        self.stats["requests_sent"] += len(names)
        self.node.send(link, codec.GOSSIP, {"c": codec.TOPOLOGY_REQUEST, "s": self.node.name,
                                             "p": b"".join(names)})
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

    def _retry(self, names: list[bytes]) -> None:
        """Ask another neighbour that announced the entry; give up when none did
        (periodic gossip heals that)."""
        recs, now = self.node.topology.records, asyncio.get_running_loop().time()
        by_link: dict[str, list[bytes]] = {}
        for nb in names:
            r = self.requested.pop(nb, None)
            if r is None:
                continue
            rec, _, asked = r
            cur = recs.get(nb)
            if cur is not None and cur >= rec:
                continue
            a = self.ahead.get(nb, {})
            alt = [p for p, x in a.items() if p != asked and p in self.node.links and x >= rec]
            if not alt:
                continue
            p = self.node.rng.choice(sorted(alt))
            self.requested[nb] = (rec, now + self.request_timeout, p)
            by_link.setdefault(p, []).append(nb)
        for p, ns in by_link.items():
            self.stats["re_requests"] += len(ns)
            self._request(self.node.links[p], ns)

    def status(self) -> dict[str, Any]:
        return {**self.stats, "outstanding_requests": len(self.requested)}
