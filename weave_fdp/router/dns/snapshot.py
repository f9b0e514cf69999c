"""An immutable view of the records, the only thing the DNS server threads read (pure).

The router changes the records on its own loop (gossip, attach, dns-add); the server
answers in threads of its own. Rather than lock the records on every query, the router
builds a :class:`Snapshot` after each change and swaps it in with one attribute
assignment (atomic in Python); a query reads the current snapshot once and answers from
it alone, so it never sees a change half made.

Each snapshot carries its own answer cache: swapping the snapshot drops the cache, so a
cached answer can never outlive the records it came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weave_fdp.router.dns.records import Entry, Records


def _ip_key(addr: str) -> tuple[int, ...]:
    return tuple(int(p) for p in addr.split("."))


@dataclass(frozen=True)
class Snapshot:
    generation: int                              # Records.generation it was built from
    names: dict[str, tuple[str, ...]]            # lower-case name -> live addresses, each once, sorted
    parents: frozenset[str]                      # lower-case names with live names below them
    owners: dict[str, str]                       # address -> hostname of its newest live owner
    # answers built from this snapshot: request key -> packed replies without their ID (see
    # Responder); the one mutable part, written by the server threads (dict stores are atomic)
    answers: dict[bytes, list[bytes]] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, entries: Iterable[Entry], generation: int) -> Snapshot:
        """The snapshot of ``entries`` (in any order). Its cost, paid on the router's loop
        after changes, is one pass over the entries: about 30 ms per 10,000 names."""
        addrs: dict[str, set[str]] = {}
        newest: dict[str, Entry] = {}
        for e in entries:
            if e.tombstone:                      # not live
                continue
            name = e.hostname.lower()
            held = addrs.get(name)
            if held is None:
                addrs[name] = {e.addr}
            else:
                held.add(e.addr)
            old = newest.get(e.addr)
            if old is None or (e.created, e.version, e.key) > (old.created, old.version, old.key):
                newest[e.addr] = e
        parents = set()
        for name in addrs:                       # "a.b.weave.local." -> "b.weave.local.", "weave.local.", ...
            labels = name.split(".")
            for i in range(1, len(labels) - 1):
                parents.add(".".join(labels[i:]))
        return cls(generation, {n: tuple(a) if len(a) == 1 else tuple(sorted(a, key=_ip_key))
                                for n, a in addrs.items()},
                   frozenset(parents), {a: e.hostname for a, e in newest.items()})

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(-1, {}, frozenset(), {})

    def lookup(self, name: str) -> tuple[str, ...]:
        """Live addresses of ``name`` (case-insensitive), sorted."""
        return self.names.get(name.lower(), ())

    def has_below(self, name: str) -> bool:
        """Are there live names below ``name`` (an empty non-terminal, e.g. ``svc.weave.local.``)?"""
        return name.lower() in self.parents

    def reverse(self, addr: str) -> str | None:
        return self.owners.get(addr)


# A rebuild cheaper than this (a few hundred names) runs at once after a change, as without
# coalescing (measured: deferring it to the loop's next turn cost the attach-to-resolve time
# ~1 ms median); a dearer one (thousands of names) is coalesced.
SYNC_BELOW_S = 0.002


class SnapshotRef:
    """The current snapshot, read by any thread through :attr:`current` without a lock.

    Bound to :class:`Records` it is rebuilt on the records' owner thread whenever they
    change (``on_swap`` callbacks then run there, e.g. to ship it to the DNS server
    process); without records (in that process) whoever receives snapshots sets it.

    Rebuilds are coalesced once the owner gives a ``schedule`` (``loop.call_later``) and
    they are dear: a rebuild of a large set of records is not cheap (about 30 ms per
    10,000 names, plus shipping it), so after one the next waits at least as long as it
    took, and the changes made meanwhile ride along in one scheduled rebuild (a burst of
    gossip: one rebuild). Rebuilds never take more than about half of the owner's time,
    however fast the records change. A rebuild cheaper than SYNC_BELOW_S (a few hundred
    names) runs at once after the change, as does every one without ``schedule`` (tests,
    tools).
    """

    def __init__(self, records: Records | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.records = records
        self.on_swap: list[Callable[[Snapshot], None]] = []
        self.schedule: Callable[[float, Callable[[], None]], object] | None = None
        self.clock = clock
        self.built = 0              # snapshots built after a change
        self.coalesced = 0          # changes that rode along with a rebuild already scheduled
        self._pending = False
        self._not_before = 0.0      # clock() before which no rebuild starts (the last one's cost)
        self._last_cost = 0.0       # s the last rebuild (and its shipping) took
        if records is None:
            self.current = Snapshot.empty()
            return
        self.current = Snapshot.build(records.unordered(), records.generation)
        records.listeners.append(self.refresh)

    def refresh(self) -> None:
        """The records changed: rebuild now, or once soon when rebuilds are scheduled."""
        if self.records is None or self.records.generation == self.current.generation:
            return
        if self._pending:
            self.coalesced += 1
            return
        now = self.clock()
        if self.schedule is None or (self._last_cost < SYNC_BELOW_S and now >= self._not_before):
            self._rebuild()               # cheap (few names) or nothing to wait for: at once
            return
        self._pending = True
        self.schedule(max(0.0, self._not_before - now), self._scheduled)

    def flush(self) -> None:
        """Build a scheduled snapshot now (the owner stops scheduling, or must answer from it)."""
        if self._pending:
            self._scheduled()

    def _scheduled(self) -> None:
        if not self._pending:
            return                  # built by flush() already
        self._pending = False
        self._rebuild()

    def _rebuild(self) -> None:
        records = self.records
        if records is None or records.generation == self.current.generation:
            return
        t0 = self.clock()
        snap = Snapshot.build(records.unordered(), records.generation)
        self.current = snap                        # the swap: one assignment
        self.built += 1
        for fn in self.on_swap:
            fn(snap)
        end = self.clock()
        self._last_cost = end - t0
        self._not_before = end + self._last_cost
