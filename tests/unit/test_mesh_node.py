"""MeshNode over the in-memory transport: tie-breaking, convergence, gossip channels, removal."""

from __future__ import annotations

import asyncio
import random

from weave_fdp.router.mesh import sim
from weave_fdp.router.mesh.node import MeshNode, keep_new_link
from weave_fdp.router.mesh.sim import SimLink


def test_keep_new_link_is_consistent_on_both_ends() -> None:
    a, b = "7e:00:00:00:00:01", "7e:00:00:00:00:02"
    # the pair (a dialed b, b dialed a): a sees its outbound + inbound, b likewise
    for new_out_at_a in (True, False):
        keep_at_a = keep_new_link(a, b, new_out_at_a)
        keep_at_b = keep_new_link(b, a, not new_out_at_a)  # the same TCP link seen from b
        assert keep_at_a == keep_at_b
    assert keep_new_link(a, b, True) and not keep_new_link(b, a, True)  # a (smaller) dialed -> kept


async def _settle(nodes: list[MeshNode], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not sim.converged(nodes):
        assert asyncio.get_running_loop().time() < deadline, "mesh did not converge"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let routes recompute


def test_duplicate_links_resolve_to_one() -> None:
    async def main() -> None:
        a, b = sim.make_node(1), sim.make_node(2)
        la, lb = SimLink(a, b, True), SimLink(b, a, False)   # a dialed b
        la.other, lb.other = lb, la
        ma, mb = SimLink(a, b, False), SimLink(b, a, True)   # b dialed a at the same time
        ma.other, mb.other = mb, ma
        ma.features = la.features  # same incarnation of b on both
        mb.features = lb.features
        assert a.link_up(la) and b.link_up(mb)
        # second link of each side: a keeps its own outbound (a < b), b agrees
        assert not a.link_up(ma)
        assert b.link_up(lb)
        assert a.links[b.name] is la and b.links[a.name] is lb
    asyncio.run(main())


def test_line_converges_with_routes_and_removal() -> None:
    async def main() -> None:
        nodes = [sim.make_node(i, gc_grace=0.1) for i in range(6)]
        for x, y in zip(nodes, nodes[1:]):
            assert sim.connect(x, y)
        await _settle(nodes)
        first, last = nodes[0], nodes[-1]
        assert first.routes.unicast[last.name] == nodes[1].name
        assert last.routes.unicast[first.name] == nodes[4].name
        assert first.routes.broadcast_from(first.name) == [nodes[1].name]
        # cut the middle: each half drops the other within the grace period
        nodes[2].links[nodes[3].name].close("test cut")
        await asyncio.sleep(0.5)
        assert set(first.topology.peers) == {n.name for n in nodes[:3]}
        assert set(last.topology.peers) == {n.name for n in nodes[3:]}
        assert sim.connect(nodes[2], nodes[3])
        await _settle(nodes)
    asyncio.run(main())


class Recorder:
    def __init__(self) -> None:
        self.state: set[bytes] = set()
        self.unicast: list[tuple[str, bytes]] = []
        self.broadcast: list[tuple[str, bytes]] = []

    def gossip(self) -> bytes | None:
        return b"|".join(sorted(self.state)) or None

    def on_gossip(self, src: str, payload: bytes) -> bytes | None:
        new = set(payload.split(b"|")) - self.state
        self.state |= new
        return b"|".join(sorted(new)) or None

    def on_gossip_broadcast(self, src: str, payload: bytes) -> None:
        self.broadcast.append((src, payload))

    def on_gossip_unicast(self, src: str, payload: bytes) -> None:
        self.unicast.append((src, payload))


def test_gossip_channels_unicast_broadcast_and_state() -> None:
    async def main() -> None:
        rng = random.Random(7)
        nodes = [sim.make_node(i) for i in range(12)]
        for i in range(1, 12):
            for j in rng.sample(range(i), min(2, i)):
                sim.connect(nodes[i], nodes[j])
        recs = [Recorder() for _ in nodes]
        chans = [n.register_channel("test", r) for n, r in zip(nodes, recs)]
        await _settle(nodes)
        assert chans[3].gossip_unicast(nodes[9].name, b"hi")
        chans[5].gossip_broadcast(b"all")
        recs[0].state.add(b"k0")
        chans[0].gossip_neighbours(b"k0")
        def arrived() -> bool:
            return (bool(recs[9].unicast) and all(b"k0" in r.state for r in recs)
                    and all(r.broadcast for k, r in enumerate(recs) if k != 5))
        deadline = asyncio.get_running_loop().time() + 10
        while not arrived() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)   # a duplicate delivery, if any, would arrive in this window
        assert recs[9].unicast == [(nodes[3].name, b"hi")]
        assert all(r.unicast == [] for k, r in enumerate(recs) if k != 9)
        for k, r in enumerate(recs):
            assert r.broadcast == ([] if k == 5 else [(nodes[5].name, b"all")])  # exactly once
            assert b"k0" in r.state
    asyncio.run(main())


def test_conn_limit_and_self_refused() -> None:
    async def main() -> None:
        a = sim.make_node(1, conn_limit=1)
        b, c = sim.make_node(2), sim.make_node(3)
        assert sim.connect(b, a)
        assert not sim.connect(c, a)
        assert b.name in a.links and c.name not in a.links
        link = SimLink(a, a, True)
        assert a.admit(link) == "connected to ourselves"
    asyncio.run(main())
