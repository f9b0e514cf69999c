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
        addrs: dict[str, set[str]] = {}
        newest: dict[str, Entry] = {}
        for e in entries:
            if not e.live:
                continue
            addrs.setdefault(e.hostname.lower(), set()).add(e.addr)
            old = newest.get(e.addr)
            if old is None or (e.created, e.version, e.key) > (old.created, old.version, old.key):
                newest[e.addr] = e
        parents = set()
        for name in addrs:                       # "a.b.weave.local." -> "b.weave.local.", "weave.local.", ...
            labels = name.split(".")
            for i in range(1, len(labels) - 1):
                parents.add(".".join(labels[i:]))
        return cls(generation, {n: tuple(sorted(a, key=_ip_key)) for n, a in addrs.items()},
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


class SnapshotRef:
    """The current snapshot, read by any thread through :attr:`current` without a lock.

    Bound to :class:`Records` it is rebuilt on the records' owner thread whenever they
    change (``on_swap`` callbacks then run there, e.g. to ship it to the DNS server
    process); without records (in that process) whoever receives snapshots sets it."""

    def __init__(self, records: Records | None = None) -> None:
        self.records = records
        self.on_swap: list[Callable[[Snapshot], None]] = []
        if records is None:
            self.current = Snapshot.empty()
            return
        self.current = Snapshot.build(records.entries(), records.generation)
        records.listeners.append(self.refresh)

    def refresh(self) -> None:
        if self.records is None or self.records.generation == self.current.generation:
            return
        snap = Snapshot.build(self.records.entries(), self.records.generation)
        self.current = snap                        # the swap: one assignment
        for fn in self.on_swap:
            fn(snap)
