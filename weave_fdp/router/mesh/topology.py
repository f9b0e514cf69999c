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
from collections import deque
from dataclasses import replace

from weave_fdp.router.mesh.codec import ConnEntry, PeerEntry

log = logging.getLogger(__name__)

SHORT_ID_BITS = 12
SHORT_ID_SPACE = 1 << SHORT_ID_BITS


class Topology:
    """Peer entries by name, with the local one always present."""

    def __init__(self, local: PeerEntry) -> None:
        self.local_name = local.name
        self.peers: dict[str, PeerEntry] = {local.name: local}
        self._unreachable_since: dict[str, float] = {}

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
        self.peers[self.local_name] = replace(self.local, connections=new, version=self.local.version + 1)
        return True

    def bump_local(self, **changes: object) -> None:
        changes.setdefault("version", self.local.version + 1)
        self.peers[self.local_name] = replace(self.local, **changes)  # type: ignore[arg-type]

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
                if e.uid != ours.uid and e.key() >= ours.key():
                    log.warning("peer %s: heard a copy of ourselves with another UID (%d) that "
                                "looks newer; reasserting (duplicate peer name?)", e.name, e.uid)
                    self.bump_local(incarnation=e.incarnation + 1)
                else:
                    self.bump_local(version=max(ours.version, e.version) + 1)
                self_bumped = True
                changed.append(self.local_name)
                continue
            old = self.peers.get(e.name)
            if old is None or e.key() > old.key():
                self.peers[e.name] = e
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
            for c in entry.connections:
                if c.established and c.peer not in seen and c.peer in self.peers:
                    seen.add(c.peer)
                    queue.append(c.peer)
        return seen

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
            del self.peers[n]
            self._unreachable_since.pop(n, None)
        return gone, next_due

    def short_id_conflict(self) -> bool:
        """True when another peer with a smaller name holds our short ID (we must move)."""
        sid = self.local.short_id
        return any(e.short_id == sid and e.name < self.local_name
                   for n, e in self.peers.items() if n != self.local_name)

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
