"""Topology gossip, protocol 2: digests, requests, summaries, the incremental graph, and v1 links."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.errors import ProtocolError
from weave_fdp.router.mesh import codec, sim
from weave_fdp.router.mesh.codec import ConnEntry, PeerEntry
from weave_fdp.router.mesh.node import MeshNode
from weave_fdp.router.mesh.routes import symmetric_graph
from weave_fdp.router.mesh.topology import Topology

names = st.integers(0, 2**48 - 1).map(lambda v: ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8)))
keys = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))


# ---------------------------------------------------------------- codec

@given(st.sampled_from([codec.DIGEST_DELTA, codec.DIGEST_FULL, codec.DIGEST_FULL_REPLY]),
       st.lists(st.tuples(names, keys), max_size=20))
def test_digest_roundtrip(kind: int, items: list[tuple[str, tuple[int, int, int]]]) -> None:
    data = codec.encode_digest(kind, items)
    assert len(data) == 1 + 30 * len(items)
    assert codec.decode_digest(data) == (kind, items)


@given(st.lists(st.tuples(names, keys), max_size=20))
def test_summary_is_order_independent_and_small(items: list[tuple[str, tuple[int, int, int]]]) -> None:
    data = codec.encode_summary(items)
    assert len(data) == 21
    kind, (count, fp) = codec.decode_digest(data)
    assert kind == codec.DIGEST_SUMMARY and count == len(items)
    assert fp == codec.fingerprint(list(reversed(items)))


@given(st.lists(names, max_size=20))
def test_request_roundtrip(ns: list[str]) -> None:
    assert codec.decode_request(codec.encode_request(ns)) == ns


@pytest.mark.parametrize("data", [b"", b"\x09", b"\x00" + b"x" * 29, b"\x03" + b"x" * 19, b"\x01" + b"y" * 31])
def test_bad_digests_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_digest(data)


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_digest_and_request_decoders_never_crash(data: bytes) -> None:
    for dec in (codec.decode_digest, codec.decode_request):
        try:
            dec(data)
        except ProtocolError:
            pass


# ---------------------------------------------------------------- incremental graph

def _name(i: int) -> str:
    return f"7e:00:00:00:00:{i:02x}"


def _entry(i: int, version: int, conns: set[tuple[int, bool]]) -> PeerEntry:
    return PeerEntry(_name(i), f"h{i}", 1, 1, version, i,
                     tuple(ConnEntry(_name(j), "x:1", True, est) for j, est in sorted(conns)))


@given(st.lists(st.tuples(st.integers(0, 7), st.sets(st.tuples(st.integers(0, 7), st.booleans()), max_size=5),
                          st.sampled_from(["", "check", "gc"])), max_size=40))
@settings(max_examples=200, deadline=None)
def test_incremental_graph_matches_the_reference(steps: list[tuple[int, set[tuple[int, bool]], str]]) -> None:
    topo = Topology(_entry(0, 1, set()))
    version = {0: 1}
    for i, conns, then in steps:
        version[i] = version.get(i, 0) + 1
        e = _entry(i, version[i], {(j, est) for j, est in conns if j != i})
        if i == 0:
            topo.set_local_connections(list(e.connections))
        else:
            topo.apply([e])
        if then == "gc":   # removals between changes, so later rows gain and lose removed peers
            topo.garbage_collect(0.0, 0.0)
        if then:
            assert topo.graph() == symmetric_graph(topo.peers)
            assert topo.records == {e.nb: e.record for e in topo.peers.values()}
            assert topo.fingerprint() == codec.fingerprint([(e.name, e.key()) for e in topo.peers.values()])
    topo.garbage_collect(0.0, 0.0)  # removals too
    assert topo.graph() == symmetric_graph(topo.peers)


def test_short_id_conflict_seen_after_incremental_checks() -> None:
    topo = Topology(replace(_entry(5, 1, set()), short_id=9))
    assert not topo.short_id_conflict()
    topo.apply([replace(_entry(1, 1, set()), short_id=3)])
    assert not topo.short_id_conflict()
    topo.apply([replace(_entry(2, 1, set()), short_id=9)])   # smaller name takes our ID
    assert topo.short_id_conflict()


# ---------------------------------------------------------------- dissemination

async def _settle(nodes: list[MeshNode], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not sim.converged(nodes):
        assert asyncio.get_running_loop().time() < deadline, "mesh did not converge"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)


def _random_mesh(n: int, seed: int, protocol: object = codec.PROTOCOL_MAX, **kw: object) -> list[MeshNode]:
    rng = random.Random(seed)
    nodes = [sim.make_node(i, rng=random.Random(i), **kw) for i in range(n)]  # type: ignore[arg-type]
    for i in range(1, n):
        for j in rng.sample(range(i), min(3, i)):
            p = protocol(i, j) if callable(protocol) else protocol
            assert sim.connect(nodes[i], nodes[j], protocol_version=p)
    return nodes


def _stat(nodes: list[MeshNode], key: str) -> int:
    return sum(nd.topo_gossip.stats[key] for nd in nodes)


def test_each_entry_crosses_the_mesh_once_per_peer() -> None:
    async def main() -> None:
        nodes = _random_mesh(40, 1)
        await _settle(nodes)
        # every peer received every other peer's (final) entry exactly once: no flooding
        assert _stat(nodes, "entries_sent") == 40 * 39
        assert _stat(nodes, "re_requests") == 0
        assert all(not nd.topo_gossip.requested for nd in nodes)
        # routes agree with the reference graph everywhere
        for nd in nodes:
            assert nd.routes.graph == symmetric_graph(nd.topology.peers)
    asyncio.run(main())


def test_a_change_sends_digests_and_one_entry_per_peer() -> None:
    async def main() -> None:
        nodes = _random_mesh(20, 2)
        await _settle(nodes)
        sent0 = _stat(nodes, "entries_sent")
        assert sim.connect(nodes[0], nodes[19])   # two entries change (0 and 19)
        await _settle(nodes)
        # each of the 2 new entries reaches each of the 19 others once (the pair also
        # exchange full digests and push nothing more)
        assert _stat(nodes, "entries_sent") - sent0 == 2 * 19
    asyncio.run(main())


def test_protocol_1_and_2_links_interoperate() -> None:
    async def main() -> None:
        seen_on_v1: list[str] = []
        orig = sim.SimLink.send

        def send(self: sim.SimLink, tag: int, body: dict) -> None:
            if self.protocol_version == 1 and tag == codec.GOSSIP:
                seen_on_v1.append(body["c"])
            orig(self, tag, body)

        sim.SimLink.send = send  # type: ignore[method-assign]
        try:
            nodes = _random_mesh(25, 3, protocol=lambda i, j: 1 if (i + j) % 3 == 0 else 2)
            await _settle(nodes)
        finally:
            sim.SimLink.send = orig  # type: ignore[method-assign]
        # a version 1 neighbour gets entries pushed, never a digest or a request
        assert seen_on_v1 and set(seen_on_v1) == {"topology"}
    asyncio.run(main())


def test_periodic_summary_costs_little_and_heals_a_missed_change() -> None:
    async def main() -> None:
        nodes = _random_mesh(12, 4)
        await _settle(nodes)
        before, entries = sum(nd.gossip_tx_bytes for nd in nodes), _stat(nodes, "entries_sent")
        for nd in nodes:
            nd.gossip_round()
        await asyncio.sleep(0.1)
        # views agree: one 21-byte summary (+ channel, sender, framing) per neighbour asked, nothing more
        per_msg = (sum(nd.gossip_tx_bytes for nd in nodes) - before) / (2 * len(nodes))
        assert per_msg < 80, per_msg
        assert _stat(nodes, "entries_sent") == entries
        # a change that nobody was told about (as if every delta was lost) ...
        a = nodes[5]
        a.topology.bump_local(nickname="renamed")
        await asyncio.sleep(0.1)
        assert not sim.converged(nodes)
        # ... heals through periodic summaries (mismatch -> full digests -> push)
        deadline = asyncio.get_running_loop().time() + 5
        while not sim.converged(nodes):
            assert asyncio.get_running_loop().time() < deadline, "periodic gossip did not heal"
            for nd in nodes:
                nd.gossip_round()
            await asyncio.sleep(0.05)
        assert all(nd.topology.peers[a.name].nickname == "renamed" for nd in nodes)
    asyncio.run(main())


def test_protocol_2_nodes_and_protocol_3_nodes_converge() -> None:
    """Nodes that speak at most version 2 (every fourth) in a mesh of version 3 nodes: each
    link carries entries in its own version's format, and every node ends with every entry."""
    async def main() -> None:
        formats: dict[int, set[str]] = {2: set(), 3: set()}
        orig = sim.SimLink.send

        def send(self: sim.SimLink, tag: int, body: dict) -> None:
            if tag == codec.GOSSIP and body["c"] == "topology":
                p = body["p"]
                try:
                    codec.decode_topology(p)
                    formats[self.protocol_version].add("msgpack")
                except ProtocolError:
                    codec.decode_topology_v3(p)
                    formats[self.protocol_version].add("binary")
            orig(self, tag, body)

        sim.SimLink.send = send  # type: ignore[method-assign]
        try:
            nodes = _random_mesh(30, 5, protocol=lambda i, j: 2 if i % 4 == 0 or j % 4 == 0 else 3)
            await _settle(nodes)
            # a change made at a version 2 node reaches every version 3 node, and back
            nodes[8].topology.bump_local(nickname="v2 node")
            nodes[8]._queue_topology([nodes[8].name], exclude=None)
            nodes[9].topology.bump_local(nickname="v3 node")
            nodes[9]._queue_topology([nodes[9].name], exclude=None)
            await _settle(nodes)
        finally:
            sim.SimLink.send = orig  # type: ignore[method-assign]
        assert formats == {2: {"msgpack"}, 3: {"binary"}}
        assert all(nd.topology.peers[nodes[8].name].nickname == "v2 node" and
                   nd.topology.peers[nodes[9].name].nickname == "v3 node" for nd in nodes)
        for nd in nodes:
            assert nd.routes.graph == symmetric_graph(nd.topology.peers)
    asyncio.run(main())


async def _diamond() -> list[MeshNode]:
    """Four settled nodes a, b, c, d linked a - b, a - c, b - d, c - d: two routes from a to d."""
    a, b, c, d = (sim.make_node(i, rng=random.Random(i)) for i in range(4))
    for x, y in ((a, b), (a, c), (b, d), (c, d)):
        assert sim.connect(x, y)
    await _settle([a, b, c, d])
    return [a, b, c, d]


def test_unanswered_request_is_asked_again_elsewhere() -> None:
    async def main() -> None:
        # d hears about a's change from both b and c
        nodes = await _diamond()
        a, b, c, d = nodes
        d.topo_gossip.request_timeout = 0.2
        mute = {b.name, c.name}
        silenced: list[str] = []
        for nd in (b, c):
            orig = nd.topo_gossip.on_request

            def swallow(link: object, payload: bytes, nd: MeshNode = nd, orig: object = orig) -> None:
                if nd.name in mute:   # the first request each gets is lost
                    mute.discard(nd.name)
                    silenced.append(nd.name)
                    return
                orig(link, payload)  # type: ignore[operator]
            nd.topo_gossip.on_request = swallow  # type: ignore[method-assign]
        a.topology.bump_local(nickname="again")
        a._queue_topology([a.name], exclude=None)
        await _settle(nodes, timeout=5)
        assert d.topology.peers[a.name].nickname == "again"
        assert d.topo_gossip.stats["re_requests"] >= 1 and silenced
    asyncio.run(main())


def test_link_down_moves_the_request_to_another_announcer() -> None:
    async def main() -> None:
        nodes = await _diamond()
        a, b, c, d = nodes
        # d is told that b and c hold a newer a; it asks one, whose link then dies
        newer = replace(a.topology.local, version=a.topology.local.version + 1, nickname="moved")
        a.topology._put(newer)
        b.topology.apply([newer])
        c.topology.apply([newer])
        for via in (b, c):
            d.topo_gossip._on_delta(d.links[via.name], newer.record)
        asked = d.topo_gossip.requested[newer.nb][2]
        d.links[asked].close("test: cut")
        await asyncio.sleep(0.1)
        assert d.topology.peers[a.name].nickname == "moved"
    asyncio.run(main())


def test_a_stale_copy_of_ourselves_is_corrected() -> None:
    async def main() -> None:
        a, b = sim.make_node(1), sim.make_node(2)
        assert sim.connect(a, b)
        await _settle([a, b])
        current = a.topology.local
        stale = codec.encode_digest(codec.DIGEST_DELTA, [(a.name, (current.incarnation, current.version - 1,
                                                                   current.uid))])[1:]
        a.topo_gossip._on_delta(a.links[b.name], stale)
        await asyncio.sleep(0.05)
        assert b.topology.peers[a.name].key() == current.key()
        assert a.topo_gossip.holds_current(b.name, a.name)
    asyncio.run(main())


@given(st.integers(2, 12), st.integers(0, 10_000), st.integers(0, 2), st.data())
@settings(max_examples=25, deadline=None)
def test_any_mix_of_protocol_versions_converges(n: int, seed: int, shift: int, data: st.DataObject) -> None:
    """Random meshes whose links speak versions 1, 2 and 3 converge, and so does a later change
    (on a virtual clock: timers fire at once)."""
    async def main() -> None:
        nodes = _random_mesh(n, seed, protocol=lambda i, j: 1 + (i * 7 + j + shift) % 3)
        await _settle(nodes, timeout=60)
        nd = nodes[data.draw(st.integers(0, n - 1))]
        nd.topology.bump_local(nickname="changed")
        nd._queue_topology([nd.name], exclude=None)
        await _settle(nodes, timeout=60)
        assert all(o.topology.peers[nd.name].nickname == "changed" for o in nodes)
        assert all(not o.topo_gossip.requested for o in nodes)
        for o in nodes:
            o.stop()
    with asyncio.Runner(loop_factory=sim.VirtualClockLoop) as runner:
        runner.run(main())
