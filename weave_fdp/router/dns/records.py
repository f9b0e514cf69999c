"""DNS records as gossiped state (pure: time is passed in, nothing touches the kernel).

An entry says "peer ORIGIN maps HOSTNAME to ADDR for CONTAINER". Only the origin
changes its entries: it bumps the version on every change, and a removal is a
tombstone (the version bumped, ``tombstone`` = when it was removed) so the removal
travels by gossip like an addition. Merging keeps, per key, the entry of highest
rank (version, then tombstone, then created): a join, so merging is commutative,
associative and idempotent, and every peer converges on the same set.

Three rules keep removed names from coming back:
- tombstones live ``TOMBSTONE_TTL`` seconds, far longer than gossip takes;
- entries of a peer that left the mesh (unreachable, garbage-collected, rmpeer'ed)
  are purged, so a partitioned peer holds none of the names of the other side when
  the partition heals;
- the origin is the authority on its own entries: when it hears of an entry of
  its own that it lacks or holds at a lower version (a stale copy, or one from
  before a restart), it answers with a higher version of what it knows (its live
  entry, or a tombstone), which wins everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

TOMBSTONE_TTL = 600.0      # s a tombstone is kept (gossip reaches everyone within seconds)
EXTERNAL = "weave:extern"  # container id of names added for things that are not containers

Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class Entry:
    hostname: str       # fully qualified, case as supplied
    origin: str         # peer name that owns the entry
    container: str      # target it belongs to (netns:NAME, pid:PID, container id) or EXTERNAL
    addr: str           # dotted IPv4
    version: int = 1
    tombstone: int = 0  # wall clock (s) of the removal; 0 = live
    created: int = 0    # wall clock (ms) of the (re-)addition: the newest owner of an address wins PTR

    @property
    def key(self) -> Key:
        return (self.hostname, self.origin, self.container, self.addr)

    @property
    def live(self) -> bool:
        return self.tombstone == 0

    @property
    def rank(self) -> tuple[int, int, int]:
        return (self.version, self.tombstone, self.created)


class Records:
    """Every entry this peer knows, indexed for lookups by name and by address."""

    def __init__(self, local: str) -> None:
        self.local = local
        self._entries: dict[Key, Entry] = {}
        self._by_name: dict[str, set[Key]] = {}
        self._by_addr: dict[str, set[Key]] = {}
        self.generation = 0   # bumped on every change
        # called (on the thread that changed the records) after every change: the DNS
        # server's snapshot is rebuilt this way, never read from here by its threads
        self.listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------ storage

    def _put(self, e: Entry) -> None:
        self._entries[e.key] = e
        self._by_name.setdefault(e.hostname.lower(), set()).add(e.key)
        self._by_addr.setdefault(e.addr, set()).add(e.key)
        self.generation += 1

    def _drop(self, key: Key) -> None:
        e = self._entries.pop(key)
        for index, k in ((self._by_name, e.hostname.lower()), (self._by_addr, e.addr)):
            keys = index[k]
            keys.discard(key)
            if not keys:
                del index[k]
        self.generation += 1

    def _notify(self, before: int) -> None:
        if self.generation != before:
            for fn in self.listeners:
                fn()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: (e.hostname.lower(), e.key))

    def unordered(self) -> list[Entry]:
        """Every entry, in no particular order (cheaper than :meth:`entries`: no sort)."""
        return list(self._entries.values())

    def local_entries(self) -> list[Entry]:
        """Our own entries, tombstones included (persisted: versions survive a restart)."""
        return [e for e in self.entries() if e.origin == self.local]

    # ------------------------------------------------------------ local changes

    def add(self, hostname: str, container: str, addr: str, now: float) -> Entry | None:
        """Add (or revive) our entry; the changed entry to gossip, or None if it was live."""
        key = (hostname, self.local, container, addr)
        old = self._entries.get(key)
        if old is not None and old.live:
            return None
        e = Entry(hostname, self.local, container, addr, (old.version + 1) if old else 1, 0, int(now * 1000))
        self._put(e)
        self._notify(self.generation - 1)
        return e

    def remove(self, now: float, *, hostname: str | None = None, container: str | None = None,
               addr: str | None = None) -> list[Entry]:
        """Tombstone our live entries matching every given field (hostname case-insensitively)."""
        out, before = [], self.generation
        for e in list(self._entries.values()):
            if e.origin != self.local or not e.live:
                continue
            if hostname is not None and e.hostname.lower() != hostname.lower():
                continue
            if container is not None and e.container != container:
                continue
            if addr is not None and e.addr != addr:
                continue
            t = replace(e, version=e.version + 1, tombstone=max(1, int(now)))
            self._put(t)
            out.append(t)
        self._notify(before)
        return out

    def restore(self, entries: Iterable[Entry]) -> None:
        """Our entries read back from disk at start (others' entries come by gossip)."""
        before = self.generation
        for e in entries:
            if e.origin == self.local:
                old = self._entries.get(e.key)
                if old is None or e.rank > old.rank:
                    self._put(e)
        self._notify(before)

    # ------------------------------------------------------------ gossip

    def merge(self, incoming: Iterable[Entry], now: float) -> list[Entry]:
        """Merge entries from a peer; returns what changed here (to pass on).

        Entries of our own origin are never adopted: we answer with a higher version
        of what we hold (see the module doc)."""
        changed, before = [], self.generation
        for e in incoming:
            old = self._entries.get(e.key)
            if old is not None and e.rank <= old.rank:
                continue
            if e.origin == self.local:
                version = max(e.version, old.version if old else 0) + 1
                if old is not None and old.live:
                    fixed = replace(old, version=version)
                else:
                    fixed = replace(e, version=version, tombstone=old.tombstone if old else max(1, int(now)))
                self._put(fixed)
                changed.append(fixed)
                continue
            self._put(e)
            changed.append(e)
        self._notify(before)
        return changed

    def purge_origin(self, origin: str) -> int:
        """Forget every entry of ``origin`` (a peer that left); how many were dropped."""
        if origin == self.local:
            return 0
        keys, before = [k for k, e in self._entries.items() if e.origin == origin], self.generation
        for k in keys:
            self._drop(k)
        self._notify(before)
        return len(keys)

    def origins(self) -> set[str]:
        return {e.origin for e in self._entries.values()}

    def expire(self, now: float, ttl: float = TOMBSTONE_TTL) -> int:
        """Drop tombstones older than ``ttl``; how many."""
        old, before = [k for k, e in self._entries.items() if not e.live and now - e.tombstone > ttl], self.generation
        for k in old:
            self._drop(k)
        self._notify(before)
        return len(old)

    # ------------------------------------------------------------ lookups

    def lookup(self, name: str) -> list[str]:
        """Live addresses of ``name`` (case-insensitive), each once, in a stable order."""
        keys = self._by_name.get(name.lower(), ())
        return sorted({self._entries[k].addr for k in keys if self._entries[k].live},
                      key=lambda a: tuple(int(p) for p in a.split(".")))

    def known(self, name: str) -> bool:
        return bool(self.lookup(name))

    def has_suffix(self, suffix: str) -> bool:
        """Is there a live name under ``suffix`` (an empty non-terminal, e.g. ``svc.weave.local.``)?"""
        s = "." + suffix.lower()
        return any(n.endswith(s) and any(self._entries[k].live for k in ks) for n, ks in self._by_name.items())

    def reverse(self, addr: str) -> str | None:
        """The name of the current owner of ``addr``: of its live entries, the newest."""
        live = [self._entries[k] for k in self._by_addr.get(addr, ()) if self._entries[k].live]
        if not live:
            return None
        return max(live, key=lambda e: (e.created, e.version, e.key)).hostname

    def of_container(self, container: str) -> list[Entry]:
        return [e for e in self.entries() if e.container == container and e.live]


def shuffled(addrs: list[str], rng: random.Random) -> list[str]:
    """A random order of the answers (round-robin load balancing across containers)."""
    out = list(addrs)
    rng.shuffle(out)
    return out
