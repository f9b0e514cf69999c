"""One peer's IP allocator: its ring, its consensus, its allocations (pure logic, time passed in).

The router feeds it messages from the ``ipam`` gossip channel, the set of reachable peers
and the time; it answers requests and leaves messages to send in ``outbox``. Requests that
cannot be answered yet (no consensus, no free space here) return ``Pending(reason)``: the
caller waits for a change and asks again, and on timeout shows the reason.

Before anything it says leaves (``outbox``) or any address it hands out is used, the caller
persists ``snapshot()`` when ``dirty`` is set: a crash never loses an acknowledged allocation
or a consensus promise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.errors import AlreadyExists, FdpError, NotFound, UsageError
from weave_fdp.router.ipam import wire
from weave_fdp.router.ipam.addr import Range, contains, fmt_range, host_bounds, intersect, ip, to_net
from weave_fdp.router.ipam.paxos import Claims, Paxos
from weave_fdp.router.ipam.ring import Entry, Ring, RingConflict

REQUEST_TIMEOUT_S = 3.0    # a space or claim request unanswered this long is sent again (or elsewhere)
REFUSAL_MEMORY_S = 10.0    # a peer that had nothing to give is not asked again for this long


@dataclass(frozen=True)
class Mode:
    """--ipalloc-init: ``consensus`` (with ``quorum``), ``seed`` (with ``seeds``) or ``observer``."""

    kind: str = "consensus"
    quorum: int = 1
    seeds: tuple[str, ...] = ()


@dataclass
class Pending:
    reason: str


@dataclass
class Msg:
    how: str              # "broadcast" | "unicast"
    payload: bytes
    dst: str | None = None


@dataclass
class _Request:
    peer: str
    at: float


@dataclass
class Allocator:
    me: str
    range: Range
    mode: Mode = field(default_factory=Mode)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.ring = Ring(self.range)
        self.paxos = Paxos(self.me, self.mode.quorum, self.rng) if self.mode.kind == "consensus" else None
        self.allocs: dict[int, str] = {}          # address in our space -> ident
        self.claims: dict[int, str] = {}          # explicit addresses not (yet) in our space -> ident
        self.claim_sent: dict[int, float] = {}
        self.claim_refused: dict[int, str] = {}
        self.space_req: dict[Range, _Request] = {}
        self.refused: dict[tuple[Range, str], float] = {}
        self.reachable: set[str] = set()
        self.nicknames: dict[str, str] = {}
        self.conflicts: dict[str, str] = {}       # peer -> why its gossip was refused
        self.awaiting = False                     # an allocation or prime waits for a ring
        self.outbox: list[Msg] = []
        self.dirty = False
        self.handoff_acked: str | None = None
        self.want_sent = -1e9
        if self.mode.kind == "seed" and self.ring.empty():
            self.ring.found(self.mode.seeds)
            self.dirty = True

    # ------------------------------------------------------------ views

    def label(self, peer: str) -> str:
        nick = self.nicknames.get(peer)
        return f"{peer}({nick})" if nick else peer

    def ready(self) -> bool:
        return not self.ring.empty()

    def status(self) -> str:
        """Weave's allocator states."""
        if self.ready():
            if self.space_req:
                return "waiting for IP range grant from peers"
            return "ready"
        if self.mode.kind == "observer":
            return "priming"
        if self.awaiting:
            return f"awaiting consensus (quorum: {self.mode.quorum}, known: {self.paxos.known() if self.paxos else 0})"
        return "idle"

    def _consensus_reason(self) -> str:
        if self.mode.kind == "observer":
            return ("this peer is an observer and no voting peer has founded the ring yet; "
                    "connect a peer launched with --ipalloc-init consensus or seed")
        assert self.paxos is not None
        known = sorted(self.paxos.knowledge)
        others = [self.label(p) for p in known if p != self.me]
        return (f"awaiting consensus: {self.mode.quorum} voting peer(s) needed, {max(1, len(known))} known "
                f"(this peer{', ' + ', '.join(others) if others else ''}); launch or connect the other initial "
                f"peers (weave-fdp connect HOST), or start alone with --ipalloc-init consensus=1")

    def owned_free(self) -> tuple[int, int]:
        """(addresses we own, of them free)."""
        owned = sum(hi - lo for lo, hi in self.ring.ranges_of(self.me))
        return owned, owned - len(self.allocs)

    # ------------------------------------------------------------ requests

    def prime(self, now: float) -> bool:
        if not self.ready():
            self._want_ring(now)
        return self.ready()

    def _want_ring(self, now: float) -> None:
        if not self.awaiting:
            self.awaiting = True
            self._broadcast_state()
        if self.paxos is not None:
            self.paxos.start(now)
            self.tick(now)

    def check_subnet(self, subnet: Range) -> None:
        if not contains(self.range, subnet):
            raise UsageError(f"subnet {to_net(subnet)} is outside the allocation range {to_net(self.range)}",
                             fix="ask for a subnet inside --ipalloc-range, or give an explicit address")
        lo, hi = host_bounds(subnet)
        if lo >= hi:
            raise UsageError(f"subnet {to_net(subnet)} has no address for a host",
                             fix="ask for a subnet of /30 or larger")

    def address_of(self, ident: str, subnet: Range) -> int | None:
        lo, hi = subnet
        for a, who in self.allocs.items():
            if who == ident and lo <= a < hi:
                return a
        return None

    def allocate(self, ident: str, subnet: Range, now: float) -> int | Pending:
        """An address for ``ident`` in ``subnet`` (the same one again if it has one)."""
        self.check_subnet(subnet)
        have = self.address_of(ident, subnet)
        if have is not None:
            return have
        if not self.ready():
            self._want_ring(now)
            return Pending(self._consensus_reason())
        a = self._find_free(subnet)
        if a is not None:
            self.allocs[a] = ident
            self.space_req.pop(subnet, None)
            self.dirty = True
            return a
        return self._need_space(subnet, now)

    def claim(self, ident: str, addr: int, now: float) -> bool | Pending:
        """Reserve an explicit address for ``ident``: True when held, False when outside the
        range (not managed here, as Weave), Pending while its owner hands it over."""
        if not self.range[0] <= addr < self.range[1]:
            return False
        holder = self.allocs.get(addr) or self.claims.get(addr)
        if holder is not None and holder != ident:
            raise AlreadyExists(f"address {ip(addr)} is already used by {holder}",
                                fix="pick another address, or detach it there first")
        if holder == ident and addr in self.allocs:
            return True
        if not self.ready():
            if self.claims.get(addr) != ident:
                self.claims[addr] = ident    # checked against the ring once it exists
                self.dirty = True
            return True
        owner = self.ring.owner(addr)
        if owner == self.me:
            self.claims.pop(addr, None)
            self.allocs[addr] = ident
            self.dirty = True
            return True
        why = self.claim_refused.pop(addr, None)
        if why is not None:
            self.claims.pop(addr, None)
            self.dirty = True
            raise AlreadyExists(f"address {ip(addr)} is in use: {why}", fix="pick another address")
        if owner not in self.reachable:
            raise FdpError(f"address {ip(addr)} lies in the space of peer {self.label(str(owner))}, which is "
                           f"unreachable", fix="use an address this host owns (or none: IPAM picks one), "
                           f"or if that peer is gone for good run weave-fdp rmpeer {owner}")
        if addr not in self.claims:
            self.claims[addr] = ident
            self.dirty = True
        self._send_claim(addr, str(owner), now)
        return Pending(f"waiting for peer {self.label(str(owner))} to hand over {ip(addr)}")

    def release(self, ident: str, addr: int | None = None) -> list[int]:
        """Free ``ident``'s addresses (only ``addr`` when given); the ones freed."""
        gone = [a for d in (self.allocs, self.claims) for a, who in list(d.items())
                if who == ident and (addr is None or a == addr)]
        for a in gone:
            self.allocs.pop(a, None)
            self.claims.pop(a, None)
        if gone:
            self.dirty = True
        return gone

    def owned_by(self, ident: str) -> list[int]:
        return sorted(a for d in (self.allocs, self.claims) for a, who in d.items() if who == ident)

    # ------------------------------------------------------------ space

    def _find_free(self, subnet: Range) -> int | None:
        hb = host_bounds(subnet)
        for r in self.ring.ranges_of(self.me):
            part = intersect(r, hb)
            if part is None:
                continue
            a = part[0]
            while a < part[1] and (a in self.allocs or a in self.claims):
                a += 1
            if a < part[1]:
                return a
        return None

    def _need_space(self, subnet: Range, now: float) -> Pending:
        req = self.space_req.get(subnet)
        if req is not None and now - req.at < REQUEST_TIMEOUT_S and req.peer in self.reachable:
            return Pending(f"waiting for IP range grant from peer {self.label(req.peer)}")
        free: dict[str, int] = {}
        for lo, hi, e in self.ring.spans():
            if e.peer != self.me and intersect((lo, hi), subnet):
                free[e.peer] = free.get(e.peer, 0) + e.free
        asked = {p for (s, p), at in self.refused.items() if s == subnet and now - at < REFUSAL_MEMORY_S}
        live = sorted((p for p in free if p in self.reachable and p not in asked), key=lambda p: -free[p])
        if live:
            donor = live[0]
            self.space_req[subnet] = _Request(donor, now)
            self.outbox.append(Msg("unicast", wire.encode("w", n=list(subnet)), donor))
            return Pending(f"waiting for IP range grant from peer {self.label(donor)}")
        self.space_req.pop(subnet, None)
        away = sorted(p for p in free if p not in self.reachable)
        if away:
            return Pending(f"no free address in {to_net(subnet)} here or on reachable peers; the rest is owned by "
                           f"unreachable peer(s) {', '.join(self.label(p) for p in away)}; reconnect them, or if "
                           f"they are gone for good run weave-fdp rmpeer on each")
        raise FdpError(f"subnet {to_net(subnet)} is full: every address of it is in use on the network",
                       fix="detach containers that no longer need one, or launch with a bigger --ipalloc-range")

    def _free_runs(self, part: Range) -> list[Range]:
        used = sorted(a for d in (self.allocs, self.claims) for a in d if part[0] <= a < part[1])
        runs, at = [], part[0]
        for a in used:
            if a > at:
                runs.append((at, a))
            at = a + 1
        if at < part[1]:
            runs.append((at, part[1]))
        return runs

    def _donate(self, to: str, subnet: Range) -> bool:
        """Give ``to`` half of our largest free run in ``subnet`` (the upper half: ours stays low)."""
        best: Range | None = None
        hb = host_bounds(subnet)
        for r in self.ring.ranges_of(self.me):
            part = intersect(r, hb)
            if part is None:
                continue
            for run in self._free_runs(part):
                if best is None or run[1] - run[0] > best[1] - best[0]:
                    best = run
        if best is None:
            return False
        size = best[1] - best[0]
        lo = best[1] - max(1, size // 2)
        self._give(lo, best[1], to)
        return True

    def _give(self, lo: int, hi: int, to: str) -> None:
        # a run may span several of our entries (joined in ranges_of): give entry by entry
        a = lo
        while a < hi:
            t = self.ring.token_at(a)
            end = min(hi, self.ring.end_of(t))
            self.ring.give(self.me, a, end, to)
            a = end
        self._refresh_free()
        self.dirty = True
        self._broadcast_state()

    def _refresh_free(self) -> bool:
        counts: dict[int, int] = {}
        for d in (self.allocs, self.claims):
            for a in d:
                if self.ring.owner(a) == self.me:
                    t = self.ring.token_at(a)
                    counts[t] = counts.get(t, 0) + 1
        changed = False
        for lo, hi, e in list(self.ring.spans()):
            if e.peer == self.me:
                changed |= self.ring.set_free(self.me, lo, hi - lo - counts.get(lo, 0))
        if changed:
            self.dirty = True
        return changed

    # ------------------------------------------------------------ removal and leaving

    def resolve_peer(self, text: str) -> str:
        t = text.lower()
        if t in self.ring.peers() or t in self.nicknames:
            return t
        by_nick = [p for p, n in self.nicknames.items() if n == text]
        if len(by_nick) == 1:
            return by_nick[0]
        if len(by_nick) > 1:
            raise UsageError(f"nickname {text!r} names {len(by_nick)} peers", fix="give the peer name instead")
        raise NotFound(f"no peer {text!r} in the IPAM ring", fix="see weave-fdp status ipam for the peer names")

    def rmpeer(self, text: str) -> tuple[str, int]:
        """Take over the space of a peer that is gone; (its name, addresses reclaimed)."""
        peer = self.resolve_peer(text)
        if peer == self.me:
            raise UsageError("rmpeer of this router itself", fix="run it on another, live peer")
        if peer in self.reachable:
            raise UsageError(f"peer {self.label(peer)} is reachable; rmpeer is for peers that are gone for good",
                             fix=f"run weave-fdp reset on {self.label(peer)} (it hands its space over), "
                                 f"or stop it before rmpeer")
        moved = self.ring.transfer(peer, self.me)
        if moved:
            self._refresh_free()
            self.dirty = True
            self._broadcast_state()
        return peer, moved

    def handoff(self) -> str | None:
        """Give all our space to a reachable peer before leaving; the peer, or None if none is reachable."""
        owned = self.ring.ranges_of(self.me)
        if not owned:
            return None
        live = sorted(p for p in self.reachable if p != self.me)
        if not live:
            return None
        to = live[0]
        self.ring.transfer(self.me, to)
        self.allocs.clear()
        self.claims.clear()
        self.dirty = True
        self.outbox.append(Msg("unicast", wire.encode("h", s=self._state(full=False)), to))
        self._broadcast_state()
        return to

    # ------------------------------------------------------------ gossip

    def _state(self, full: bool = True) -> wire.State:
        if full and self.ready():
            self._refresh_free()
        px = dict(self.paxos.knowledge) if self.paxos is not None and not self.ready() else None
        foreign = sorted(a for a in self.claims if self.ready() and self.ring.owner(a) != self.me)
        return wire.State(self.range, self.ring.seeds, self.ring.as_list(), px, self.awaiting and not self.ready(),
                          foreign)

    def gossip(self) -> bytes:
        return wire.encode("s", s=self._state())

    def _broadcast_state(self) -> None:
        self.outbox.append(Msg("broadcast", wire.encode("s", s=self._state(full=False))))

    def on_message(self, src: str, payload: bytes, now: float) -> bool:
        """Handle a payload from peer ``src``; True when our state changed. ProtocolError on garbage."""
        kind, body = wire.decode(payload)
        if kind in ("s", "h"):
            changed = self._merge(src, body["s"], now)
            if kind == "h":
                self.outbox.append(Msg("unicast", wire.encode("k"), src))
            return changed
        if kind == "w":
            subnet = body["n"]
            if not (contains(self.range, subnet) and self.ready() and self._donate(src, subnet)):
                self.outbox.append(Msg("unicast", wire.encode("n", n=list(subnet)), src))
            return True
        if kind == "n":
            self.refused[(body["n"], src)] = now
            req = self.space_req.get(body["n"])
            if req is not None and req.peer == src:
                del self.space_req[body["n"]]
            return True
        if kind == "c":
            self._on_claim(src, body["a"])
            return True
        if kind == "x":
            self.claim_refused[body["a"]] = body["y"]
            return True
        if kind == "k":
            self.handoff_acked = src
            return True
        return False

    def _merge(self, src: str, st: wire.State, now: float) -> bool:
        changed = False
        try:
            self.ring.check_compatible(st.range, st.seeds)
            had_ring = self.ready()
            if self.ring.merge(self.me, st.seeds, st.entries):
                changed = True
                self.dirty = True
                self.space_req.clear()
                self.refused.clear()
                if not had_ring:
                    self.awaiting = False
        except RingConflict as exc:
            self.conflicts[src] = str(exc)
            return False
        self.conflicts.pop(src, None)
        if self.paxos is not None and not self.ready():
            if st.paxos is not None and self.paxos.merge(st.paxos):
                changed = True
            if st.want:
                self.paxos.start(now)
                changed = True
        for a in st.claims:
            if self.ring.owner(a) == self.me:
                self._on_claim(src, a)
        if changed:
            self.tick(now)
        return changed

    def _on_claim(self, src: str, addr: int) -> None:
        if not self.ready() or self.ring.owner(addr) != self.me:
            return
        holder = self.allocs.get(addr) or self.claims.get(addr)
        if holder is not None:
            self.outbox.append(Msg("unicast", wire.encode("x", a=addr, y=f"allocated to {holder} on "
                                                          f"{self.label(self.me)}"), src))
            return
        self._give(addr, addr + 1, src)

    def _send_claim(self, addr: int, owner: str, now: float) -> None:
        if now - self.claim_sent.get(addr, -1e9) >= REQUEST_TIMEOUT_S:
            self.claim_sent[addr] = now
            self.outbox.append(Msg("unicast", wire.encode("c", a=addr), owner))

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Advance consensus, found the ring once agreed, move claims that became ours."""
        if self.awaiting and not self.ready() and now - self.want_sent >= REQUEST_TIMEOUT_S:
            self.want_sent = now      # repeated: a peer that joins later learns we wait
            self._broadcast_state()
        if self.paxos is not None and not self.ready():
            if self.paxos.step(now):
                self.dirty = True
                self._broadcast_state()
            value = self.paxos.consensus()
            if value is not None:
                self.ring.found(value)
                self.awaiting = False
                self.dirty = True
                self._broadcast_state()
        if self.ready():
            for a, ident in list(self.claims.items()):
                owner = self.ring.owner(a)
                if owner == self.me:
                    if a in self.allocs and self.allocs[a] != ident:
                        self.claim_refused[a] = f"allocated to {self.allocs[a]} on {self.label(self.me)}"
                    else:
                        self.allocs[a] = ident
                    del self.claims[a]
                    self.dirty = True
                elif owner in self.reachable:
                    self._send_claim(a, str(owner), now)

    def set_peers(self, reachable: set[str], nicknames: dict[str, str]) -> None:
        self.reachable = set(reachable) - {self.me}
        self.nicknames.update(nicknames)

    def take_outbox(self) -> list[Msg]:
        out, self.outbox = self.outbox, []
        return out

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        mine = self.paxos.mine if self.paxos is not None else Claims()
        return {"range": list(self.range), "seeds": list(self.ring.seeds),
                "ring": [list(e) for e in self.ring.as_list()],
                "paxos": [list(mine.promise), list(mine.accepted), list(mine.value)],
                "allocs": {str(a): i for a, i in self.allocs.items()},
                "claims": {str(a): i for a, i in self.claims.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a snapshot (validated by the persistence codec); a different range is refused."""
        rng = tuple(snap["range"])
        if rng != self.range:
            raise UsageError(f"the saved IPAM state is for range {fmt_range(rng)}, not {fmt_range(self.range)}",
                             fix="launch with the same --ipalloc-range, or weave-fdp reset to start over")
        self.ring = Ring(self.range)
        for t, p, v, f in snap["ring"]:
            self.ring._set(t, Entry(p, v, f))
        self.ring.seeds = tuple(snap["seeds"])
        if self.paxos is not None:
            pr, ac, val = snap["paxos"]
            c = Claims((pr[0], pr[1]), (ac[0], ac[1]), tuple(val))
            if c != Claims():
                self.paxos.knowledge[self.me] = c
        self.allocs = {int(a): i for a, i in snap["allocs"].items()}
        self.claims = {int(a): i for a, i in snap["claims"].items()}
        self.dirty = False
