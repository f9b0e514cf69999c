"""Static routes for a sleeve run without the router (tests, benchmarks): BFS over links.

The router computes the same thing from the mesh; this is only for standalone use.
"""

from __future__ import annotations

from collections import deque


def bfs_tree(links: dict[str, set[str]], root: str) -> dict[str, str]:
    """Parent of every node reachable from ``root`` (deterministic: neighbours sorted)."""
    parent = {root: root}
    q = deque([root])
    while q:
        n = q.popleft()
        for m in sorted(links.get(n, ())):
            if m not in parent:
                parent[m] = n
                q.append(m)
    return parent


def unicast_next_hops(links: dict[str, set[str]], local: str) -> dict[str, str]:
    """Destination -> next hop from ``local``."""
    parent = bfs_tree(links, local)
    hops = {}
    for dst in parent:
        if dst == local:
            continue
        n = dst
        while parent[n] != local:
            n = parent[n]
        hops[dst] = n
    return hops


def broadcast_next_hops(links: dict[str, set[str]], local: str) -> dict[str, list[str]]:
    """Source -> children of ``local`` on the source's BFS tree."""
    out = {}
    for src in links:
        parent = bfs_tree(links, src)
        out[src] = sorted(n for n, p in parent.items() if p == local and n != src)
    return out
