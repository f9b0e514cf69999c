"""Routes on random graphs against a reference BFS; broadcast trees deliver exactly once."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.router.mesh.codec import ConnEntry, PeerEntry
from weave_fdp.router.mesh.routes import Routes, broadcast_routes, symmetric_graph, unicast_routes


def name(i: int) -> str:
    return f"7e:00:00:00:00:{i:02x}"


def build(n: int, edges: set[tuple[int, int]], oneway: set[tuple[int, int]] = frozenset()) -> dict[str, PeerEntry]:
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    for a, b in oneway:
        adj[a].add(b)
    return {name(i): PeerEntry(name(i), str(i), 1, 1, 1, i,
                               tuple(ConnEntry(name(j), "x:1", True, True) for j in sorted(adj[i])))
            for i in range(n)}


def ref_dist(n: int, edges: set[tuple[int, int]], src: int) -> dict[int, int]:
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    dist = {src: 0}
    q = deque([src])
    while q:
        u = q.popleft()
        for v in adj[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                q.append(v)
    return dist


graphs = st.integers(1, 14).flatmap(lambda n: st.tuples(
    st.just(n), st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1]),
                        max_size=n * 3)))


@settings(max_examples=150, deadline=None)
@given(graphs, st.data())
def test_unicast_next_hops_lie_on_shortest_paths(g: tuple[int, set], data: st.DataObject) -> None:
    n, edges = g
    src = data.draw(st.integers(0, n - 1))
    peers = build(n, edges)
    routes = unicast_routes(symmetric_graph(peers), name(src))
    dist = ref_dist(n, edges, src)
    assert set(routes) == {name(d) for d in dist if d != src}
    for d in dist:
        if d == src:
            continue
        hop = int(routes[name(d)][-2:], 16)
        assert (min(hop, src), max(hop, src)) in edges  # a direct neighbour
        assert ref_dist(n, edges, hop)[d] == dist[d] - 1  # on a shortest path


@settings(max_examples=150, deadline=None)
@given(graphs, st.data())
def test_broadcast_trees_deliver_exactly_once(g: tuple[int, set], data: st.DataObject) -> None:
    n, edges = g
    src = data.draw(st.integers(0, n - 1))
    peers = build(n, edges)
    graph = symmetric_graph(peers)
    tables = {name(i): broadcast_routes(graph, name(i)) for i in range(n)}
    received = {name(src): 1}
    q = deque([name(src)])
    while q:
        u = q.popleft()
        for v in tables[u].get(name(src), []):
            received[v] = received.get(v, 0) + 1
            q.append(v)
    assert set(received) == {name(d) for d in ref_dist(n, edges, src)}
    assert all(c == 1 for c in received.values())


def test_one_way_connections_are_ignored_and_routes_are_deterministic() -> None:
    peers = build(4, {(0, 1), (1, 2)}, oneway={(0, 3), (2, 3)})
    r = Routes(peers, name(0))
    assert r.unicast == {name(1): name(1), name(2): name(1)}
    assert not r.reachable(name(3))
    # same topology in a different dict order -> same routes
    r2 = Routes(dict(reversed(list(peers.items()))), name(0))
    assert r2.unicast == r.unicast and r2.broadcast == r.broadcast


def test_equal_cost_tie_broken_by_name() -> None:
    # 0 -> {1, 2} -> 3: next hop to 3 is the smaller name (1), on every run
    peers = build(4, {(0, 1), (0, 2), (1, 3), (2, 3)})
    assert Routes(peers, name(0)).unicast[name(3)] == name(1)


@given(st.dictionaries(st.integers(0, 12), st.lists(st.integers(0, 12), max_size=6), max_size=13),
       st.integers(0, 12), st.integers(0, 12))
@settings(max_examples=300, deadline=None)
def test_broadcast_next_hops_stop_early_with_the_full_trees_answer(
        rows: dict[int, list[int]], local: int, source: int) -> None:
    """The BFS that stops at us finds the children the whole tree has (any graph, even
    asymmetric or with repeated neighbours)."""
    from weave_fdp import routing

    graph = {k: sorted(v) for k, v in rows.items()}
    parent = routing.bfs_tree(graph, source)
    want = sorted(n for n, p in parent.items() if p == local) if local in parent else []
    assert routing.broadcast_next_hops(graph, local, source) == want
