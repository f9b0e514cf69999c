"""Routes over the topology: the mesh's graph, routed by the shared BFS of ``weave_fdp.routing``.

Only established, symmetric connections count (both ends announce each other),
so a route is used only when both peers agree the link is up. Neighbours are
listed in name order, so every peer computes the same trees from the same
topology: unicast next hops lie on shortest paths, and each source's broadcast
tree delivers a frame to every reachable peer exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping

from weave_fdp.router.mesh.codec import PeerEntry
from weave_fdp.routing import bfs_tree, broadcast_next_hops, broadcast_routes, unicast_routes

__all__ = ["Graph", "Routes", "bfs_tree", "broadcast_next_hops", "broadcast_routes", "symmetric_graph",
           "unicast_routes"]

Graph = dict[str, tuple[str, ...]]


def symmetric_graph(peers: Mapping[str, PeerEntry]) -> Graph:
    """name -> sorted neighbours joined by an established connection both ends announce."""
    # each entry's sorted established peers are computed once per entry version (cached)
    empty: frozenset[str] = frozenset()
    return {name: tuple(p for p in e.established_peers
                        if name in (peers[p].established_set if p in peers else empty))
            for name, e in peers.items()}


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
