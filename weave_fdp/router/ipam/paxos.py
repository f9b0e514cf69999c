"""Single-value Paxos over gossip: the initial peers agree on who founds the ring.

Every voting peer is both proposer and acceptor. What each peer knows of every voter's
promises and acceptances (its *claims*) is gossiped as a whole; a peer changes only its
own claims, and only upwards (ballots grow), so merging two views keeps, per voter, the
claims with the higher (promise, accepted) pair.

- A proposer picks a ballot ``(round, name)`` above every ballot it has seen and promises it.
- A voter that sees a higher ballot than it promised promises that one (phase 1).
- When a quorum of voters shows a promise of the proposer's ballot, the proposer accepts
  its ballot with the value accepted at the highest ballot among them, or else its own
  proposal: the voters it knows (phase 2).
- A voter accepts a ballot it has not promised to pass over, as soon as it sees the proposer
  accept it; the value is chosen when a quorum shows the same accepted ballot.

Duelling proposers back off a random time (rng and time passed in) before trying a
higher round, so one of them wins. Safety needs the claims to be persisted before they
are gossiped (the allocator does this).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Ballot = tuple[int, str]          # (round, proposer); (0, "") is "none"
NO_BALLOT: Ballot = (0, "")
RETRY_S = (1.0, 3.0)              # a stalled proposal is retried after a random delay in this interval


@dataclass(frozen=True)
class Claims:
    promise: Ballot = NO_BALLOT
    accepted: Ballot = NO_BALLOT
    value: tuple[str, ...] = ()

    def key(self) -> tuple[Ballot, Ballot]:
        return self.promise, self.accepted


class Paxos:
    def __init__(self, me: str, quorum: int, rng: random.Random | None = None) -> None:
        self.me = me
        self.quorum = max(1, quorum)
        self.rng = rng or random.Random()
        self.knowledge: dict[str, Claims] = {}
        self.proposing = False
        self.retry_at = 0.0

    @property
    def mine(self) -> Claims:
        return self.knowledge.get(self.me, Claims())

    def known(self) -> int:
        """Voters this peer has heard of (itself included once it takes part)."""
        return len(self.knowledge)

    def merge(self, other: dict[str, Claims]) -> bool:
        """Claims gossiped by a peer; True when something was new. Our own claims are ours."""
        changed = False
        for node, c in other.items():
            if node == self.me:
                continue
            old = self.knowledge.get(node)
            if old is None or c.key() > old.key():
                self.knowledge[node] = c
                changed = True
        return changed

    def start(self, now: float) -> None:
        """Try to reach consensus (an allocation is waiting)."""
        if not self.proposing:
            self.proposing = True
            self.retry_at = now

    def step(self, now: float) -> bool:
        """Advance our own claims from what we know; True when they changed (gossip them)."""
        mine = self.mine
        before = mine
        top = max((c.promise for c in self.knowledge.values()), default=NO_BALLOT)
        if self.proposing and now >= self.retry_at and self.consensus() is None:
            # propose (again): a ballot above all we have seen
            top = (max(top[0], mine.promise[0]) + 1, self.me)
            self.retry_at = now + self.rng.uniform(*RETRY_S)
        if top > mine.promise:
            mine = Claims(top, mine.accepted, mine.value)               # phase 1: promise
        # phase 2 as proposer: a quorum promised our ballot
        if mine.promise[1] == self.me and mine.accepted != mine.promise:
            promisers = [c for n, c in self.knowledge.items() if n != self.me and c.promise == mine.promise]
            promisers.append(mine)
            if len(promisers) >= self.quorum:
                prior = max(promisers, key=lambda c: c.accepted)
                value = prior.value if prior.accepted != NO_BALLOT else self._proposal()
                mine = Claims(mine.promise, mine.promise, value)
        # phase 2 as acceptor: the proposer of the ballot we promised has accepted it
        p = mine.promise
        if p[1] != self.me and mine.accepted != p:
            prop = self.knowledge.get(p[1])
            if prop is not None and prop.accepted == p:
                mine = Claims(p, p, prop.value)
        if mine != before:
            self.knowledge[self.me] = mine
            return True
        return False

    def _proposal(self) -> tuple[str, ...]:
        return tuple(sorted({*self.knowledge, self.me}))

    def consensus(self) -> tuple[str, ...] | None:
        """The chosen value (the peers to found the ring among), once a quorum accepted one ballot."""
        count: dict[Ballot, int] = {}
        for c in self.knowledge.values():
            if c.accepted != NO_BALLOT:
                count[c.accepted] = count.get(c.accepted, 0) + 1
        for c in self.knowledge.values():
            if c.accepted != NO_BALLOT and count[c.accepted] >= self.quorum:
                return c.value
        return None
