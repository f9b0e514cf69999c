"""Routes over a peer graph: pure, deterministic breadth-first search.

One implementation for every part that routes by peer: the mesh (``router/mesh/routes.py``
builds the graph from the topology it gossips) and the standalone sleeve
(``datapath/sleeve/run.py`` builds it from a static file). Imports nothing.

A graph maps each peer to its neighbours *in sorted order*: BFS visits them in that
order, so every peer computes the same trees from the same graph. Unicast next hops
lie on shortest paths, and each source's broadcast tree reaches every peer it can
reach exactly once. The graph should be symmetric (the mesh counts a connection only
when both ends announce it); on an asymmetric one the trees are still well formed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

P = TypeVar("P", bound=Hashable)
Graph = Mapping[P, Sequence[P]]


def bfs_tree(graph: Graph[P], root: P) -> dict[P, P | None]:
    """Parent of every peer reachable from ``root`` (``root``'s parent is None)."""
    parent: dict[P, P | None] = {root: None}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        for nb in graph.get(node, ()):
            if nb not in parent:
                parent[nb] = node
                queue.append(nb)
    return parent


def unicast_routes(graph: Graph[P], local: P) -> dict[P, P]:
    """destination -> next hop (a direct neighbour), for every reachable peer but ``local``."""
    next_hop: dict[P, P] = {}
    queue = deque([local])
    seen = {local}
    while queue:
        node = queue.popleft()
        for nb in graph.get(node, ()):
            if nb not in seen:
                seen.add(nb)
                next_hop[nb] = nb if node == local else next_hop[node]
                queue.append(nb)
    return next_hop


def broadcast_next_hops(graph: Graph[P], local: P, source: P) -> list[P]:
    """Our children on ``source``'s broadcast tree (where we forward its broadcasts).

    The BFS from ``source`` of :func:`bfs_tree`, stopped when it comes to us: our children
    are the neighbours it first finds from us, and none is found later (on average this
    walks half the graph, which counts when every source's tree is wanted)."""
    seen = {source}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        nbs = graph.get(node, ())
        if node == local:
            return sorted({nb for nb in nbs if nb not in seen})   # type: ignore[type-var]
        for nb in nbs:
            if nb not in seen:
                seen.add(nb)
                queue.append(nb)
    return []


def broadcast_routes(graph: Graph[P], local: P) -> dict[P, list[P]]:
    """source -> our next hops on its tree, for every source that can reach us."""
    reach = bfs_tree(graph, local)  # the graph is symmetric: the same set reaches us
    return {src: broadcast_next_hops(graph, local, src) for src in sorted(reach)}   # type: ignore[type-var]
