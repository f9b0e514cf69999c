"""A simulated mesh of 150 peers on a virtual clock: convergence, and what one join or
leave costs each peer (the figures at thousands of peers come from `weave-fdp bench mesh`)."""

from __future__ import annotations

import asyncio
import math

import pytest

from weave_fdp.bench.mesh import MeshSim, simulate
from weave_fdp.router.mesh import sim

N = 150


@pytest.fixture(scope="module")
def result() -> dict:
    return simulate(N, window_s=30.0)


def test_converges_with_each_entry_fetched_about_once(result: dict) -> None:
    c = result["converge"]
    assert c["sim_s"] < 2.0
    # every peer fetched every other peer's entry: about N entries each, not N per link
    assert result["topology_gossip"]["entries_sent"] < 1.5 * N * (N + 1)


def test_join_and_leave_cost_each_peer_a_few_messages(result: dict) -> None:
    bound = 6 * math.log2(N)   # O(log N) per peer, with room for the coalescing of a busy loop
    for phase in ("join", "leave"):
        r = result[phase]
        assert r["msgs_per_peer"] < bound, (phase, r)
        assert r["sim_s"] < 2.0, (phase, r)
    assert result["join"]["routes_agree"] and result["leave"]["routes_agree"]


def test_virtual_clock_jumps_to_timers() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0
    with asyncio.Runner(loop_factory=sim.VirtualClockLoop) as runner:
        assert runner.run(main()) == pytest.approx(3600)


def test_sim_links_keep_order_at_equal_deadlines() -> None:
    async def main() -> None:
        ms = MeshSim(2, latency=0.0)
        a, b = ms.nodes
        seen: list[bytes] = []

        class Rec:
            def gossip(self) -> None:
                return None

            def on_gossip(self, src: str, payload: bytes) -> None:
                seen.append(payload)

            def on_gossip_broadcast(self, src: str, payload: bytes) -> None: ...

            def on_gossip_unicast(self, src: str, payload: bytes) -> None: ...

        ch = a.register_channel("t", Rec())
        b.register_channel("t", Rec())
        sim.connect(a, b, net=ms.net)
        await ms.settle()
        for i in range(50):
            ch.gossip_neighbours(bytes([i]))
        await ms.settle()
        assert seen == [bytes([i]) for i in range(50)]
    with asyncio.Runner(loop_factory=sim.VirtualClockLoop) as runner:
        runner.run(main())
