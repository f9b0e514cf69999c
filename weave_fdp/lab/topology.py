"""Lab topologies as pure data: which hosts share an underlay link.

Hosts are numbered from 1. ``full``: every pair; ``line``: 1-2-...-n;
``ring``: the line plus n-1 (from 3 hosts on); ``star``: host 1 is the hub.
"""

from __future__ import annotations

from itertools import combinations

from weave_fdp.errors import UsageError

TOPOLOGIES = ("full", "line", "ring", "star")
MAX_HOSTS = 250  # host i owns 192.0.2.i and 10.32.i.0/24
MAX_CONTAINERS = 250  # container j on host i owns 10.32.i.j

Edge = tuple[int, int]


def check_topology(topology: str) -> str:
    """Return ``topology`` if known, else raise ``UsageError``."""
    if topology not in TOPOLOGIES:
        raise UsageError(f"unknown topology {topology!r}", fix=f"choose one of {', '.join(TOPOLOGIES)}")
    return topology


def check_hosts(hosts: int) -> int:
    """Return ``hosts`` if within 1..MAX_HOSTS, else raise ``UsageError``."""
    if not isinstance(hosts, int) or isinstance(hosts, bool) or not 1 <= hosts <= MAX_HOSTS:
        raise UsageError(f"cannot build a lab of {hosts!r} hosts", fix=f"use 1 to {MAX_HOSTS} hosts")
    return hosts


def check_containers(containers: int) -> int:
    """Return ``containers`` (per host) if within 0..MAX_CONTAINERS, else raise ``UsageError``."""
    if not isinstance(containers, int) or isinstance(containers, bool) or not 0 <= containers <= MAX_CONTAINERS:
        raise UsageError(f"cannot give each host {containers!r} containers",
                         fix=f"use 0 to {MAX_CONTAINERS} containers per host")
    return containers


def edges(topology: str, hosts: int) -> set[Edge]:
    """Undirected links as pairs (i, j) with i < j."""
    check_topology(topology)
    check_hosts(hosts)
    if topology == "full":
        return set(combinations(range(1, hosts + 1), 2))
    if topology == "star":
        return {(1, j) for j in range(2, hosts + 1)}
    line = {(i, i + 1) for i in range(1, hosts)}
    if topology == "ring" and hosts >= 3:
        line.add((1, hosts))
    return line


def adjacency(topology: str, hosts: int) -> dict[int, list[int]]:
    """Neighbours of every host, sorted: ``{1: [2], 2: [1, 3], 3: [2]}`` for a line of 3."""
    adj: dict[int, list[int]] = {i: [] for i in range(1, hosts + 1)}
    for i, j in edges(topology, hosts):
        adj[i].append(j)
        adj[j].append(i)
    return {i: sorted(n) for i, n in adj.items()}


def expected_reachability(topology: str, hosts: int) -> dict[Edge, bool]:
    """For every ordered pair (i, j), i != j: True when the underlay links them directly."""
    links = edges(topology, hosts)
    return {
        (i, j): (min(i, j), max(i, j)) in links
        for i in range(1, hosts + 1)
        for j in range(1, hosts + 1)
        if i != j
    }
