"""The ring: who owns which part of the address range, as a CRDT gossiped between peers.

The range ``[lo, hi)`` is cut at *tokens*; the entry at token ``t`` says which peer owns
``[t, next token)`` (the last entry runs to ``hi``). Each entry carries a version and the
owner's count of free addresses in it. Rules that make merging safe without a central store:

- only the owner of an entry changes it (donating it, updating its free count), and every
  change bumps the entry's version;
- tokens are never removed, so a new token only ever appears inside a range its creator
  owned: merge is the union of tokens, keeping the higher version of each;
- the same token at the same version with different content, a newer version of an entry
  this peer owns that it did not write, or a new token cut into this peer's space, can only
  come from another peer writing as us (a cloned identity) or from two rings founded apart:
  merge refuses it (``RingConflict``) and changes nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from weave_fdp.router.ipam.addr import Range, fmt_range, ip


class RingConflict(Exception):
    """Gossip that cannot be merged; the message says why and what to do."""


@dataclass(frozen=True)
class Entry:
    peer: str
    version: int
    free: int


class Ring:
    def __init__(self, rng: Range, seeds: tuple[str, ...] = ()) -> None:
        self.range = rng
        self.seeds = seeds            # the peers the ring was founded among (consensus or seed)
        self.tokens: list[int] = []   # sorted
        self.entries: dict[int, Entry] = {}

    # ------------------------------------------------------------ queries

    def empty(self) -> bool:
        return not self.tokens

    def end_of(self, token: int) -> int:
        i = bisect.bisect_right(self.tokens, token)
        return self.tokens[i] if i < len(self.tokens) else self.range[1]

    def spans(self) -> Iterable[tuple[int, int, Entry]]:
        """(start, end, entry) for every entry in address order."""
        for i, t in enumerate(self.tokens):
            end = self.tokens[i + 1] if i + 1 < len(self.tokens) else self.range[1]
            yield t, end, self.entries[t]

    def owner(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.tokens, addr) - 1
        if i < 0 or not self.range[0] <= addr < self.range[1]:
            return None
        return self.entries[self.tokens[i]].peer

    def token_at(self, addr: int) -> int:
        return self.tokens[bisect.bisect_right(self.tokens, addr) - 1]

    def ranges_of(self, peer: str) -> list[Range]:
        """The address ranges ``peer`` owns, adjacent ones joined."""
        out: list[Range] = []
        for lo, hi, e in self.spans():
            if e.peer != peer:
                continue
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    def owned(self) -> dict[str, int]:
        """peer -> number of addresses it owns."""
        out: dict[str, int] = {}
        for lo, hi, e in self.spans():
            out[e.peer] = out.get(e.peer, 0) + hi - lo
        return out

    def peers(self) -> set[str]:
        return {e.peer for e in self.entries.values()}

    def as_list(self) -> list[tuple[int, str, int, int]]:
        return [(t, self.entries[t].peer, self.entries[t].version, self.entries[t].free) for t in self.tokens]

    # ------------------------------------------------------------ changes by the owner

    def _set(self, token: int, entry: Entry) -> None:
        if token not in self.entries:
            bisect.insort(self.tokens, token)
        self.entries[token] = entry

    def found(self, peers: Iterable[str]) -> None:
        """Split the whole range evenly among ``peers`` (sorted), every entry at version 1:
        every peer that founds a ring from the same list gets the same ring."""
        names = sorted(set(peers))
        assert names and self.empty()
        lo, hi = self.range
        size = hi - lo
        n = min(len(names), size)
        for i, peer in enumerate(names[:n]):
            start = lo + size * i // n
            end = lo + size * (i + 1) // n
            self._set(start, Entry(peer, 1, end - start))
        self.seeds = tuple(names)

    def give(self, me: str, lo: int, hi: int, to: str) -> None:
        """``me`` hands ``[lo, hi)`` (inside one of its entries) to peer ``to``."""
        t = self.token_at(lo)
        e = self.entries[t]
        end = self.end_of(t)
        assert e.peer == me and t <= lo < hi <= end, (fmt_range((lo, hi)), e, ip(t))
        if hi < end:
            self._set(hi, Entry(me, 1, 0))   # the rest stays ours (free count set by the owner)
        if lo == t:
            self._set(t, Entry(to, e.version + 1, hi - lo))
        else:
            self._set(lo, Entry(to, 1, hi - lo))

    def set_free(self, me: str, token: int, free: int) -> bool:
        e = self.entries[token]
        assert e.peer == me
        if e.free == free:
            return False
        self._set(token, Entry(me, e.version + 1, free))
        return True

    def transfer(self, from_peer: str, to: str) -> int:
        """Every entry of ``from_peer`` now belongs to ``to`` (rmpeer by ``to``, or a peer
        handing its space away when it leaves); returns the number of addresses moved."""
        moved = 0
        for lo, hi, e in list(self.spans()):
            if e.peer == from_peer:
                self._set(lo, Entry(to, e.version + 1, hi - lo))
                moved += hi - lo
        return moved

    # ------------------------------------------------------------ merge

    def check_compatible(self, rng: Range, seeds: tuple[str, ...]) -> None:
        if rng != self.range:
            raise RingConflict(f"a peer allocates from {fmt_range(rng)}, this router from {fmt_range(self.range)}; "
                               f"launch every peer with the same --ipalloc-range")
        if self.tokens and seeds and self.seeds and tuple(seeds) != tuple(self.seeds):
            raise RingConflict(f"a peer's ring was founded among {len(seeds)} peer(s) ({', '.join(seeds)}), "
                               f"this router's among {', '.join(self.seeds)}: two networks formed apart; "
                               f"reset the smaller side (weave-fdp reset) and launch it again joined to the other")

    def merge(self, me: str, seeds: tuple[str, ...], incoming: list[tuple[int, str, int, int]]) -> bool:
        """Merge a peer's view; True when something changed. Refuses the whole update on conflict."""
        lo, hi = self.range
        if self.tokens:
            self.check_compatible(self.range, seeds)
        updates: list[tuple[int, Entry]] = []
        for tok, peer, ver, free in incoming:
            if not lo <= tok < hi:
                raise RingConflict(f"ring entry {ip(tok)} lies outside the range {fmt_range(self.range)}")
            mine = self.entries.get(tok)
            new = Entry(peer, ver, free)
            if mine is None:
                if self.tokens and self.owner(tok) == me and peer != me:
                    raise RingConflict(f"a peer says {peer} owns {ip(tok)}, inside this peer's space, which no one "
                                       f"else may cut (is this peer's state dir a copy of another host's?); "
                                       f"give each host its own state (weave-fdp reset on the copy)")
                updates.append((tok, new))
            elif ver > mine.version:
                if mine.peer == me:
                    raise RingConflict(f"a peer has a newer version of this peer's entry {ip(tok)} "
                                       f"(now {peer}): another host runs with this peer's name and state, "
                                       f"or this peer was removed with rmpeer; "
                                       f"run weave-fdp reset on this host and launch it again")
                updates.append((tok, new))
            elif ver == mine.version and new != mine:
                raise RingConflict(f"two different entries for {ip(tok)} at version {ver} ({mine.peer} and {peer}): "
                                   f"two rings founded apart, or a cloned state dir; reset one side")
        if incoming and self.empty():
            if incoming[0][0] != lo:
                raise RingConflict(f"a peer's ring does not start at {ip(lo)}")
            self.seeds = tuple(seeds)
        for tok, e in updates:
            self._set(tok, e)
        return bool(updates)
