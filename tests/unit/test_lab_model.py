"""Lab naming, targets, underlay rules and the state file: no root needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from weave_fdp import paths
from weave_fdp.errors import NotFound, UsageError
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import underlay
from weave_fdp.lab.lab import Lab, netns_pattern


def test_names_and_addresses() -> None:
    lab = Lab(prefix="t1a2b3", hosts=3, topology="line", containers=2)
    assert lab.ul_ns == "t1a2b3-ul"
    assert lab.host_ns(1) == "t1a2b3-h1"
    assert lab.host_ip(3) == "192.0.2.3"
    assert lab.neighbours(2) == [1, 3]
    assert lab.container_ns(1, 2) == "t1a2b3-h1-c2"
    assert lab.container_cidr(3, 1) == "10.32.3.1/12"
    assert lab.namespaces()[:4] == ["t1a2b3-ul", "t1a2b3-h1", "t1a2b3-h1-c1", "t1a2b3-h1-c2"]
    with pytest.raises(NotFound, match="no host 4"):
        lab.host_ns(4)
    with pytest.raises(NotFound, match="no container 3"):
        lab.container_ns(1, 3)


@pytest.mark.parametrize(("target", "ns"), [
    ("h1", "tx-h1"), ("2", "tx-h2"), ("H2", "tx-h2"), ("h1-c1", "tx-h1-c1"), ("h2c1", "tx-h2-c1"), ("ul", "tx-ul"),
])
def test_resolve_targets(target: str, ns: str) -> None:
    assert Lab(prefix="tx", hosts=2, containers=1).resolve(target) == ns


@pytest.mark.parametrize("target", ["x1", "h", "h1-d2", ""])
def test_resolve_rejects_garbage(target: str) -> None:
    with pytest.raises(UsageError):
        Lab(prefix="tx", hosts=2).resolve(target)


@pytest.mark.parametrize("prefix", ["a-b", "", "x" * 17, "a b", "../x"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(UsageError, match="prefix"):
        Lab(prefix=prefix)


def test_pattern_matches_only_this_lab() -> None:
    pat = netns_pattern("t1")
    assert all(pat.fullmatch(n) for n in ["t1-ul", "t1-h1", "t1-h12-c3"])
    assert not any(pat.fullmatch(n) for n in ["t12-h1", "t1-h1-x", "t1-hx", "xt1-h1", "t1-h1-h1", "t1"])


def test_cut_needs_two_hosts() -> None:
    lab = Lab(prefix="tx", hosts=2)
    with pytest.raises(UsageError, match="same host"):
        lab.cut(1, 1)
    with pytest.raises(UsageError, match="port"):
        lab.block_udp_port(1, 2, 70000)


def test_ruleset_allows_each_link_both_ways() -> None:
    text = underlay.ruleset([(1, 2), (2, 3)])
    for a, b in [(1, 2), (2, 1), (2, 3), (3, 2)]:
        assert f'"h{a}" . "h{b}"' in text
    assert '"h1" . "h3"' not in text
    assert "policy drop" in text
    assert underlay.cut_command(1, 2) == 'add element bridge lab cut { "h1" . "h2", "h2" . "h1" }'
    assert underlay.udp_block_command(2, 3, 6784, unblock=True).startswith("delete element bridge lab udp_block")


def test_state_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "RUNTIME_ROOT", tmp_path)
    st = lab_state.LabState(prefix="t9", hosts=2, topology="ring", containers={1: 1, 2: 0},
                            routers=True, cuts=[(1, 2)], udp_blocks=[(1, 2, 6784)])
    path = lab_state.save(st)
    assert path == tmp_path / "lab" / "t9.json"
    assert lab_state.load("t9") == st
    assert lab_state.known_prefixes() == ["t9"]
    path.write_text("{torn")
    assert lab_state.load("t9") is None
    assert lab_state.remove("t9") and not lab_state.remove("t9")
    assert lab_state.load("t9") is None


def test_load_missing_lab_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "RUNTIME_ROOT", tmp_path)
    with pytest.raises(NotFound, match="no lab with prefix 'nope'"):
        Lab.load("nope")
