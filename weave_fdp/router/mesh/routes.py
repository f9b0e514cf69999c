"""Routes over the topology: pure, deterministic functions.

Only established, symmetric connections count (both ends announce each other),
so a route is used only when both peers agree the link is up. Breadth-first search
visits neighbours in name order, so every peer computes the same trees from the
same topology: unicast next hops lie on shortest paths, and each source's
broadcast tree delivers a frame to every reachable peer exactly once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from weave_fdp.router.mesh.codec import PeerEntry

Graph = dict[str, list[str]]


def symmetric_graph(peers: Mapping[str, PeerEntry]) -> Graph:
    """name -> sorted neighbours joined by an established connection both ends announce."""
    # each entry's sorted established peers are computed once per entry version (cached)
    empty: frozenset[str] = frozenset()
    return {name: [p for p in e.established_peers
                   if name in (peers[p].established_set if p in peers else empty)]
            for name, e in peers.items()}


def bfs_tree(graph: Graph, root: str) -> dict[str, str | None]:
    """Parent of every peer reachable from root (root's parent is None)."""
    parent: dict[str, str | None] = {root: None}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        for nb in graph.get(node, ()):
            if nb not in parent:
                parent[nb] = node
                queue.append(nb)
    return parent


def unicast_routes(graph: Graph, local: str) -> dict[str, str]:
    """destination -> next hop (a direct neighbour), for every reachable peer but us."""
    next_hop: dict[str, str] = {}
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


def broadcast_next_hops(graph: Graph, local: str, source: str) -> list[str]:
    """Our children on ``source``'s broadcast tree (where we forward its broadcasts)."""
    parent = bfs_tree(graph, source)
    if local not in parent:
        return []
    return sorted(n for n, p in parent.items() if p == local)


def broadcast_routes(graph: Graph, local: str) -> dict[str, list[str]]:
    """source -> our next hops on its tree, for every source that can reach us."""
    reach = bfs_tree(graph, local)  # the graph is symmetric: same set reaches us
    return {src: broadcast_next_hops(graph, local, src) for src in sorted(reach)}


class Routes:
    """Routes of one topology snapshot; broadcast trees are computed on demand."""

    def __init__(self, peers: Mapping[str, PeerEntry], local: str, graph: Graph | None = None) -> None:
        """``graph``: symmetric_graph(peers) when the caller keeps it already (Topology.graph)."""
        self.local = local
        self.graph = symmetric_graph(peers) if graph is None else graph
        self.unicast = unicast_routes(self.graph, local)
        self._broadcast: dict[str, list[str]] = {}
        self._all_broadcast: dict[str, list[str]] | None = None

    def reachable(self, name: str) -> bool:
        return name == self.local or name in self.unicast

    def broadcast_from(self, source: str) -> list[str]:
        if source not in self._broadcast:
            self._broadcast[source] = broadcast_next_hops(self.graph, self.local, source)
        return self._broadcast[source]

    @property
    def broadcast(self) -> dict[str, list[str]]:
        if self._all_broadcast is None:
            self._all_broadcast = {s: self.broadcast_from(s)
                                   for s in sorted(bfs_tree(self.graph, self.local))}
        return self._all_broadcast
