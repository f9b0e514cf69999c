"""Lab topologies: adjacency is symmetric, connected and has the expected shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.errors import ExitCode, UsageError
from weave_fdp.lab import topology as topo


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("full", 3, {1: [2, 3], 2: [1, 3], 3: [1, 2]}),
        ("line", 3, {1: [2], 2: [1, 3], 3: [2]}),
        ("ring", 4, {1: [2, 4], 2: [1, 3], 3: [2, 4], 4: [1, 3]}),
        ("star", 4, {1: [2, 3, 4], 2: [1], 3: [1], 4: [1]}),
        ("ring", 2, {1: [2], 2: [1]}),  # a ring of two is just one link
        ("full", 1, {1: []}),
    ],
)
def test_adjacency_examples(name: str, n: int, expected: dict[int, list[int]]) -> None:
    assert topo.adjacency(name, n) == expected


def _connected(adj: dict[int, list[int]]) -> bool:
    seen, todo = {1}, [1]
    while todo:
        for n in adj[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return len(seen) == len(adj)


@given(name=st.sampled_from(topo.TOPOLOGIES), n=st.integers(1, 40))
def test_adjacency_properties(name: str, n: int) -> None:
    adj = topo.adjacency(name, n)
    assert sorted(adj) == list(range(1, n + 1))
    for i, ns in adj.items():
        assert i not in ns
        for j in ns:
            assert i in adj[j]  # symmetric
    assert _connected(adj)
    count = len(topo.edges(name, n))
    assert count == {"full": n * (n - 1) // 2, "line": n - 1, "star": n - 1,
                     "ring": n if n >= 3 else n - 1}[name]


@given(name=st.sampled_from(topo.TOPOLOGIES), n=st.integers(1, 12))
def test_expected_reachability_matches_edges(name: str, n: int) -> None:
    exp = topo.expected_reachability(name, n)
    assert len(exp) == n * (n - 1)
    edges = topo.edges(name, n)
    for (i, j), ok in exp.items():
        assert ok == ((min(i, j), max(i, j)) in edges)
        assert exp[(j, i)] == ok


@pytest.mark.parametrize("bad", ["mesh", "", "Full"])
def test_unknown_topology_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="unknown topology") as ei:
        topo.check_topology(bad)
    assert ei.value.exit_code == ExitCode.USAGE
    assert "full, line, ring, star" in str(ei.value)


@pytest.mark.parametrize("bad", [0, -1, 251, True, "3"])
def test_bad_host_count_is_a_usage_error(bad: object) -> None:
    with pytest.raises(UsageError, match="hosts"):
        topo.check_hosts(bad)  # type: ignore[arg-type]


def test_container_count_bounds() -> None:
    assert topo.check_containers(0) == 0
    with pytest.raises(UsageError):
        topo.check_containers(251)
