"""The sleeve's forwarding decisions, without sockets: where a captured frame goes, and
what happens to an entry received from a neighbour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp import routing
from weave_fdp.datapath.sleeve import decide, wire
from weave_fdp.datapath.sleeve.drops import SleeveDrop


A, B, C, D = (bytes([0x7E, 0, 0, 0, 0, i]) for i in range(1, 5))
MAC_ON_C = bytes.fromhex("0a0000000003")
ALL = lambda hop: True   # noqa: E731  (this host floods to every neighbour by sleeve)


def test_a_learned_mac_goes_to_the_next_hop_toward_its_peer() -> None:
    v = decide.route_captured(MAC_ON_C, A, {MAC_ON_C: (C, 0.0)}, {B: B, C: B}, {A: [B]}, {B}, ALL)
    assert v == decide.Verdict(False, C, (B,), ())


@pytest.mark.parametrize("mac", [b"\xff" * 6, bytes.fromhex("01005e000001"), bytes.fromhex("0a00000000ee")],
                         ids=["broadcast", "multicast", "unknown-unicast"])
def test_group_and_unknown_macs_flood_along_the_local_tree(mac: bytes) -> None:
    v = decide.route_captured(mac, A, {MAC_ON_C: (C, 0.0)}, {B: B, C: C}, {A: [B, C]}, {B, C}, ALL)
    assert v == decide.Verdict(False, wire.BROADCAST, (B, C), ())


def test_floods_skip_neighbours_reached_another_way_and_count_hops_without_a_link() -> None:
    v = decide.route_captured(b"\xff" * 6, A, {}, {}, {A: [B, C, D]}, {B, D}, lambda hop: hop != D)
    assert v.hops == (B,) and v.drops == ((SleeveDrop.NOT_SLEEVE, C),)


def test_a_learned_mac_without_a_route_is_a_named_drop() -> None:
    v = decide.route_captured(MAC_ON_C, A, {MAC_ON_C: (C, 0.0)}, {}, {}, {B}, ALL)
    assert v == decide.Verdict(False, C, (), ((SleeveDrop.NO_ROUTE, C),))


def test_received_for_us_is_delivered_and_not_relayed() -> None:
    assert decide.route_received(B, A, 16, B, A, {C: C}, {B: [C]}, {B, C}) == decide.Verdict(True, A, (), ())


def test_received_broadcast_is_delivered_and_passed_on_but_never_back() -> None:
    v = decide.route_received(B, wire.BROADCAST, 16, B, A, {}, {B: [B, C, D]}, {B, C, D})
    assert v == decide.Verdict(True, wire.BROADCAST, (C, D), ())


@pytest.mark.parametrize("unicast,reason", [({}, SleeveDrop.UNKNOWN_PEER), ({D: B}, SleeveDrop.ROUTING_LOOP)])
def test_received_for_others_without_a_way_on_is_a_named_drop(unicast: dict, reason: str) -> None:
    v = decide.route_received(B, D, 16, B, A, unicast, {}, {B, C})
    assert not v.deliver and v.hops == () and v.drops == ((reason, D),)


def test_relaying_stops_when_the_ttl_runs_out_but_delivery_does_not() -> None:
    assert decide.route_received(B, D, 1, B, A, {D: C}, {}, {C}).drops == ((SleeveDrop.TTL_EXCEEDED, D),)
    v = decide.route_received(B, wire.BROADCAST, 1, B, A, {}, {B: [C]}, {C})
    assert v.deliver and v.hops == () and v.drops == ((SleeveDrop.TTL_EXCEEDED, wire.BROADCAST),)


# ---- properties over random meshes: the decisions with the BFS routes every peer computes

NAMES = [bytes([0x7E, 0, 0, 0, 0, i]) for i in range(1, 9)]


@st.composite
def meshes(draw: st.DrawFn) -> dict[bytes, list[bytes]]:
    n = draw(st.integers(2, len(NAMES)))
    names = NAMES[:n]
    pairs = draw(st.sets(st.tuples(st.sampled_from(names), st.sampled_from(names)).filter(lambda p: p[0] < p[1])))
    graph: dict[bytes, set[bytes]] = {p: set() for p in names}
    for a, b in pairs:
        graph[a].add(b)
        graph[b].add(a)
    return {p: sorted(nb) for p, nb in graph.items()}


def _tables(graph: dict[bytes, list[bytes]], peer: bytes) -> tuple[dict, dict]:
    return routing.unicast_routes(graph, peer), routing.broadcast_routes(graph, peer)


@settings(max_examples=150, deadline=None)
@given(meshes(), st.data())
def test_a_flood_reaches_every_reachable_peer_exactly_once(graph: dict, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(sorted(graph)))
    tables = {p: _tables(graph, p) for p in graph}
    first = decide.route_captured(b"\xff" * 6, source, {}, *tables[source], set(graph[source]), ALL)
    delivered = [source]
    queue = [(source, hop) for hop in first.hops]
    while queue:
        sender, peer = queue.pop()
        v = decide.route_received(source, wire.BROADCAST, 16, sender, peer, *tables[peer], set(graph[peer]))
        assert v.deliver and not v.drops
        delivered.append(peer)
        queue += [(peer, hop) for hop in v.hops]
    assert sorted(delivered) == sorted(routing.bfs_tree(graph, source))


@settings(max_examples=150, deadline=None)
@given(meshes(), st.data())
def test_a_unicast_frame_follows_next_hops_to_its_peer(graph: dict, data: st.DataObject) -> None:
    source, target = data.draw(st.sampled_from(sorted(graph))), data.draw(st.sampled_from(sorted(graph)))
    tables = {p: _tables(graph, p) for p in graph}
    v = decide.route_captured(MAC_ON_C, source, {MAC_ON_C: (target, 0.0)}, *tables[source],
                              set(graph[source]), ALL)
    reachable = target in routing.bfs_tree(graph, source)
    if target == source or not reachable:
        assert v.hops == () and v.drops == ((SleeveDrop.NO_ROUTE, target),)
        return
    sender, at, hops = source, v.hops[0], 1
    while True:
        v = decide.route_received(source, target, 16 - hops, sender, at, *tables[at], set(graph[at]))
        assert not v.drops
        if v.deliver:
            break
        (nxt,) = v.hops
        sender, at, hops = at, nxt, hops + 1
    assert at == target and hops == len(_path(graph, source, target)) - 1


def _path(graph: dict, a: bytes, b: bytes) -> list[bytes]:
    parent = routing.bfs_tree(graph, a)
    path = [b]
    while path[-1] != a:
        path.append(parent[path[-1]])
    return path
