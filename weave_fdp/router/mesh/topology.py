"""The mesh topology as this peer knows it: pure logic, no I/O.

Every peer owns its own entry (name, nickname, UID, incarnation, version, short ID,
connections) and is the only one to change it; others keep the copy with the
highest (incarnation, version, uid). A peer that hears about an older incarnation
or a newer-looking copy of itself jumps its version so its own copy wins again.
Peers that are no longer reachable over announced established connections are
removed (garbage collected).
"""

from __future__ import annotations

import logging
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import ConnEntry, PeerEntry

log = logging.getLogger(__name__)

SHORT_ID_BITS = 12
SHORT_ID_SPACE = 1 << SHORT_ID_BITS
_NONE: frozenset[str] = frozenset()
U64 = 1 << 64   # incarnations and versions are u64 on the wire


class Topology:
    """Peer entries by name, with the local one always present."""

    def __init__(self, local: PeerEntry, intern_row: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None
                 ) -> None:
        """``intern_row``: maps a graph row to an equal one to keep instead (a simulation of
        thousands of peers in one process shares equal rows among them; None: keep it)."""
        self.local_name = local.name
        self._intern_row = intern_row
        self.peers: dict[str, PeerEntry] = {local.name: local}
        # the same entries as 30-byte digest records, by the name's 6 bytes (gossip compares
        # what neighbours announce with these without decoding them)
        self.records: dict[bytes, bytes] = {local.nb: local.record}
        self._fingerprint: bytes | None = None   # of ``records`` (None: changed since computed)
        self._unreachable_since: dict[str, float] = {}
        # incremental symmetric graph (see graph()): names changed since the last call, with
        # the established peers each announced as of then; the graph's rows, and whether the
        # last call handed them out (the next change then copies the dict, not each row)
        self._dirty: dict[str, frozenset[str]] = {local.name: _NONE}
        self._graph: dict[str, tuple[str, ...]] = {}
        self._graph_shared = False
        self._sid_dirty: set[str] | None = None   # None: check every peer's short ID

    def _put(self, entry: PeerEntry) -> None:
        """Every change of ``peers`` goes through here or _drop (the graph is kept incrementally)."""
        old = self.peers.get(entry.name)
        if entry.name not in self._dirty:
            self._dirty[entry.name] = old.established_set if old is not None else _NONE
        self.peers[entry.name] = entry
        self.records[entry.nb] = entry.record
        self._fingerprint = None
        if self._sid_dirty is not None:
            self._sid_dirty.add(entry.name)

    def _drop(self, name: str) -> None:
        old = self.peers.pop(name)
        del self.records[old.nb]
        self._fingerprint = None
        self._dirty.setdefault(name, old.established_set)

    def fingerprint(self) -> bytes:
        """codec.fingerprint_records of every entry held, computed once per change (periodic
        summaries send and check it; a sort of every record each time at thousands of peers)."""
        if self._fingerprint is None:
            self._fingerprint = codec.fingerprint_records(self.records.values())
        return self._fingerprint

    def graph(self) -> dict[str, tuple[str, ...]]:
        """``routes.symmetric_graph(self.peers)``, updated only where entries changed.

        The edge N-P exists when both announce an established connection to the other.
        A change of N's entry can change only the edges between N and the peers it
        announced before or announces now, so a recompute costs what changed, not the
        size of the mesh. The caller must not change what it gets: the next change works on
        a copy of the dict (rows are tuples).
        """
        peers = self.peers
        if self._dirty:
            if self._graph_shared:
                self._graph = dict(self._graph)
                self._graph_shared = False
            graph = self._graph
            full: set[str] = set()                 # rows rebuilt (the changed peers')
            adjust: list[tuple[str, str]] = []     # (row, peer): only that peer may enter or leave it
            for n, old in self._dirty.items():
                e = peers.get(n)
                new = e.established_set if e is not None else _NONE
                if e is not None and old == new and n in graph:
                    continue   # a new version with the same established peers: no edge moves
                full.add(n)
                for q in (old ^ new if old else new):
                    adjust.append((q, n))
            self._dirty.clear()
            # a row is rebuilt from the claims (each peer's own announcement) of the peers it
            # names, O(its degree); the rows of the peers a changed claim added or dropped
            # gain or lose that one peer (rows are tuples: what was handed out stays as it was)
            get, intern = peers.get, self._intern_row
            for t in full:
                e = get(t)
                if e is None:
                    graph.pop(t, None)
                else:
                    row = [q for q in e.established_set if (c := get(q)) is not None and t in c.established_set]
                    row.sort()
                    graph[t] = tuple(row) if intern is None else intern(tuple(row))
            for q, n in adjust:
                if q in full or (row := graph.get(q)) is None:
                    continue
                c, e = get(q), get(n)
                want = c is not None and e is not None and n in c.established_set and q in e.established_set
                i = bisect_left(row, n)
                if want != (i < len(row) and row[i] == n):
                    row = row[:i] + (n,) + row[i:] if want else row[:i] + row[i + 1:]
                    graph[q] = row if intern is None else intern(row)
        self._graph_shared = True
        return self._graph

    @property
    def local(self) -> PeerEntry:
        return self.peers[self.local_name]

    def entries(self, names: list[str] | set[str] | None = None) -> list[PeerEntry]:
        if names is None:
            return list(self.peers.values())
        return [self.peers[n] for n in names if n in self.peers]

    def set_local_connections(self, conns: list[ConnEntry]) -> bool:
        """Replace our connection list; bump our version if it changed."""
        new = tuple(sorted(conns, key=lambda c: (c.peer, c.address)))
        if new == self.local.connections:
            return False
        self._put(replace(self.local, connections=new, version=self.local.version + 1))
        return True

    def bump_local(self, **changes: object) -> None:
        changes.setdefault("version", self.local.version + 1)
        self._put(replace(self.local, **changes))  # type: ignore[arg-type]

    def apply(self, entries: list[PeerEntry]) -> tuple[list[str], bool]:
        """Merge received entries.

        Returns (names whose entry changed here, whether our own entry was bumped
        because someone holds a stale or conflicting copy of it).
        """
        changed: list[str] = []
        self_bumped = False
        for e in entries:
            if e.name == self.local_name:
                ours = self.local
                if e.key() == ours.key() or (e.uid == ours.uid and e.version < ours.version):
                    continue
                # an older incarnation of us, or a copy that would beat ours: jump past it
                changes: dict[str, int]
                if e.uid != ours.uid and e.key() >= ours.key():
                    log.warning("peer %s: heard a copy of ourselves with another UID (%d) that "
                                "looks newer; reasserting (duplicate peer name?)", e.name, e.uid)
                    changes = {"incarnation": e.incarnation + 1}
                else:
                    changes = {"version": max(ours.version, e.version) + 1}
                if changes.get("version", 0) >= U64:   # no version left above it: a new incarnation
                    changes = {"incarnation": max(ours.incarnation, e.incarnation) + 1, "version": 1}
                if changes.get("incarnation", 0) >= U64:
                    log.warning("peer %s: heard a copy of ourselves whose incarnation and version are at "
                                "their limit; keeping ours (a forged entry?)", e.name)
                    continue
                self.bump_local(**changes)
                self_bumped = True
                changed.append(self.local_name)
                continue
            old = self.peers.get(e.name)
            if old is None or e.key() > old.key():
                self._put(e)
                changed.append(e.name)
        return changed, self_bumped

    def reachable(self) -> set[str]:
        """Peers reachable from us over established connections as their owners announce them."""
        seen = {self.local_name}
        queue = deque([self.local_name])
        while queue:
            entry = self.peers.get(queue.popleft())
            if entry is None:
                continue
            for p in entry.established_set:
                if p not in seen and p in self.peers:
                    seen.add(p)
                    queue.append(p)
        return seen

    @property
    def has_unreachable(self) -> bool:
        """True while some peer is waiting out its grace period as unreachable."""
        return bool(self._unreachable_since)

    def garbage_collect(self, now: float = 0.0, grace: float = 0.0) -> tuple[list[str], float | None]:
        """Remove peers unreachable for at least ``grace`` seconds.

        Returns (removed names, time of the next removal due, or None). The grace
        period matters while gossip is in flight: an entry often arrives before the
        entries that show the path to it, and removing it at once would make it
        "new" again on the next copy, flooding it round the mesh once more.
        """
        alive = self.reachable()
        for n in list(self._unreachable_since):
            if n in alive or n not in self.peers:
                del self._unreachable_since[n]
        gone, next_due = [], None
        for n in self.peers:
            if n in alive:
                continue
            since = self._unreachable_since.setdefault(n, now)
            if now - since >= grace:
                gone.append(n)
            else:
                due = since + grace
                next_due = due if next_due is None else min(next_due, due)
        for n in gone:
            self._drop(n)
            self._unreachable_since.pop(n, None)
        return gone, next_due

    def short_id_conflict(self) -> bool:
        """True when another peer with a smaller name holds our short ID (we must move)."""
        sid, me = self.local.short_id, self.local_name
        dirty, self._sid_dirty = self._sid_dirty, set()
        # only entries changed since the last check can conflict anew (ours changing: all)
        names = self.peers if dirty is None or me in dirty else dirty
        for n in names:
            e = self.peers.get(n)
            if e is not None and n != me and e.short_id == sid and n < me:
                return True
        return False

    def choose_short_id(self, rng: random.Random | None = None) -> int:
        """A short ID nobody else in our view uses (random, so restarts rarely collide)."""
        rng = rng or random.Random()
        used = {e.short_id for n, e in self.peers.items() if n != self.local_name}
        free = SHORT_ID_SPACE - len(used)
        if free <= 0:
            return self.local.short_id  # 4096 peers: nothing better exists
        while True:
            sid = rng.randrange(SHORT_ID_SPACE)
            if sid not in used:
                return sid

    def resolve_short_id(self, rng: random.Random | None = None) -> bool:
        """Move off a short ID a smaller-named peer holds; True when we changed ours."""
        if not self.short_id_conflict():
            return False
        old = self.local.short_id
        self.bump_local(short_id=self.choose_short_id(rng))
        log.info("peer %s: short ID %d taken by another peer, now %d", self.local_name, old, self.local.short_id)
        return True
