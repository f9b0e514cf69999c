"""An in-process IPAM cluster with an in-memory transport: for tests and the benchmark.

Peers are ``Allocator``s; messages go through the real wire codec; every peer persists its
snapshot through the real persistence codec before what it sends leaves, so a crash
(dropping the object) and a restart (a new object restored from the bytes) behave as a
router killed and relaunched. Partitions are groups: peers reach each other only within
one. Time is a counter advanced by ``step``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from weave_fdp.router.ipam import persist
from weave_fdp.router.ipam.addr import Range
from weave_fdp.router.ipam.allocator import Allocator, Mode, Pending

STEP_S = 0.5


def sim_name(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0, 0, 0, i >> 8, i & 0xFF))


class Cluster:
    def __init__(self, n: int, rng: Range = (0x0A200000, 0x0A300000), *, quorum: int | None = None,
                 modes: dict[int, Mode] | None = None, seed: int = 0) -> None:
        self.rand = random.Random(seed)
        self.range = rng
        self.names = [sim_name(i) for i in range(n)]
        q = quorum if quorum is not None else n // 2 + 1
        self.modes = {name: (modes or {}).get(i, Mode("consensus", q)) for i, name in enumerate(self.names)}
        self.peers: dict[str, Allocator] = {}
        self.saved: dict[str, bytes] = {}
        self.group: dict[str, int] = {name: 0 for name in self.names}
        self.queue: list[tuple[str, str | None, bytes]] = []
        self.now = 0.0
        self.bytes_sent: dict[str, int] = {name: 0 for name in self.names}
        self.protocol_errors = 0
        for name in self.names:
            self.start(name)

    # ------------------------------------------------------------ peers

    def start(self, name: str) -> Allocator:
        a = Allocator(name, self.range, self.modes[name], random.Random(self.rand.random()))
        if name in self.saved:
            a.restore(persist.decode(self.saved[name]))
        self.peers[name] = a
        self._update_peers()
        return a

    def crash(self, name: str) -> None:
        self.peers.pop(name, None)
        self.queue = [m for m in self.queue if m[0] != name]
        self._update_peers()

    def alive(self) -> list[str]:
        return [n for n in self.names if n in self.peers]

    def reach(self, a: str, b: str) -> bool:
        return a in self.peers and b in self.peers and self.group[a] == self.group[b]

    def partition(self, groups: list[list[str]]) -> None:
        for g, names in enumerate(groups):
            for n in names:
                self.group[n] = g
        self._update_peers()

    def heal(self) -> None:
        self.partition([self.names])

    def _update_peers(self) -> None:
        for name, a in self.peers.items():
            a.set_peers({n for n in self.peers if self.reach(name, n)},
                        {n: f"p{i}" for i, n in enumerate(self.names)})

    # ------------------------------------------------------------ messages

    def _flush(self, name: str) -> None:
        a = self.peers[name]
        if a.dirty:
            self.saved[name] = persist.encode(a.snapshot())   # persisted before anything leaves
            a.dirty = False
        for m in a.take_outbox():
            self.queue.append((name, m.dst if m.how == "unicast" else None, m.payload))

    def _deliver(self, src: str, dst: str, payload: bytes) -> None:
        self.bytes_sent[src] += len(payload)
        if self.reach(src, dst):
            self.peers[dst].on_message(src, payload, self.now)
            self._flush(dst)

    def step(self) -> None:
        """Advance time, tick everyone, deliver everything queued (and what it causes)."""
        self.now += STEP_S
        for name in self.alive():
            self.peers[name].tick(self.now)
            self._flush(name)
        for _ in range(50):
            if not self.queue:
                break
            batch, self.queue = self.queue, []
            self.rand.shuffle(batch)
            for src, dst, payload in batch:
                if src not in self.peers:
                    continue
                targets = [dst] if dst is not None else [n for n in self.alive() if n != src]
                for t in targets:
                    if t in self.peers:
                        self._deliver(src, t, payload)

    def gossip_round(self) -> None:
        """Each live peer sends its full state to every peer it reaches (periodic gossip)."""
        for name in self.alive():
            a = self.peers[name]
            payload = a.gossip()
            self._flush(name)
            for other in self.alive():
                if other != name:
                    self._deliver(name, other, payload)

    def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.gossip_round()
            self.step()

    def run_until(self, pred: Callable[[], bool], max_steps: int = 200) -> bool:
        for i in range(max_steps):
            if pred():
                return True
            if i % 4 == 3:
                self.gossip_round()
            self.step()
        return pred()

    # ------------------------------------------------------------ requests

    def allocate(self, name: str, ident: str, subnet: Range | None = None, max_steps: int = 60) -> int | Pending:
        """Ask ``name`` for an address, letting the cluster run while the answer is pending."""
        a = self.peers[name]
        res: int | Pending = Pending("not asked")
        for _ in range(max_steps):
            res = a.allocate(ident, subnet or self.range, self.now)
            self._flush(name)
            if not isinstance(res, Pending):
                return res
            self.step()
            a = self.peers.get(name, a)
        return res

    def converged(self) -> bool:
        rings = [self.peers[n].ring.as_list() for n in self.alive()]
        return all(r == rings[0] for r in rings) and bool(rings[0])
