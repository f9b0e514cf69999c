"""Weave's surface: peer-name short forms, the target-list rules, connect --replace, Weave's metric names."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.errors import UsageError
from weave_fdp.router.config import RouterConfig, parse_peer_name
from weave_fdp.router.mesh.maker import ConnectionMaker
from weave_fdp.router.mesh.node import Identity, MeshNode
from weave_fdp.router.state import RouterState
from tests.unit.test_metrics import scrape

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("text,want", [
    ("::1", "00:00:00:00:00:01"),
    ("1::", "01:00:00:00:00:00"),
    ("a::1", "0a:00:00:00:00:01"),
    ("::7e:1", "00:00:00:00:7e:01"),
    ("12:34::ab", "12:34:00:00:00:ab"),
    ("1:2:3:4::", "01:02:03:04:00:00"),
    ("::1:2:3:4", "00:00:01:02:03:04"),
    ("7E:AA:BB:CC:DD:EE", "7e:aa:bb:cc:dd:ee"),
    ("0:0:0:0:0:1", "00:00:00:00:00:01"),
])
def test_peer_name_forms_expand_as_weave_does(text: str, want: str) -> None:
    assert parse_peer_name(text) == want
    assert RouterConfig(name=text).validate().name == want


@pytest.mark.parametrize("text", ["", "::", "1::2::3", "1:2:3:4:5::", "::1:2:3:4:5", "1:2:3:4:5",
                                  "1:2:3:4:5:6:7", "123::1", "g::1", "nonsense", "7e-aa-bb-cc-dd-ee"])
def test_bad_peer_names_refused_with_the_fix(text: str) -> None:
    with pytest.raises(UsageError, match="--name") as ei:
        parse_peer_name(text)
    assert "::1" in str(ei.value) and "\n" not in str(ei.value)


@given(st.binary(min_size=6, max_size=6), st.integers(0, 5), st.integers(1, 5))
def test_any_name_compressed_over_a_zero_run_reads_back(octets: bytes, start: int, run: int) -> None:
    run = min(run, 6 - start)
    b = bytearray(octets)
    b[start:start + run] = bytes(run)
    full = ":".join(f"{o:02x}" for o in b)
    assert parse_peer_name(full) == full
    groups = [f"{o:x}" for o in b]
    left, right = groups[:start], groups[start + run:]
    if 1 <= len(left) + len(right) <= 4:
        assert parse_peer_name(":".join(left) + "::" + ":".join(right)) == full


def test_mtu_range() -> None:
    assert RouterConfig(mtu=1400).validate().mtu == 1400
    for bad in (100, 20000):
        with pytest.raises(UsageError, match="--mtu"):
            RouterConfig(mtu=bad).validate()


def test_target_list_rules(tmp_path: Path) -> None:
    """launch PEERS replaces the saved list; --resume (a restart) keeps it, PEERS only seed."""
    st_ = RouterState(tmp_path)
    assert st_.initial_targets(["192.0.2.9:6783"], resume=True) == ["192.0.2.9:6783"]   # seeds
    assert st_.load_direct() == ["192.0.2.9:6783"]
    assert st_.initial_targets(["192.0.2.1:6783", "192.0.2.2:6783"], resume=False) == \
        ["192.0.2.1:6783", "192.0.2.2:6783"]
    st_.save_direct(["192.0.2.2:6783", "192.0.2.3:6783"])                              # forget + connect
    assert st_.initial_targets(["192.0.2.1:6783"], resume=True) == ["192.0.2.2:6783", "192.0.2.3:6783"]
    assert st_.initial_targets([], resume=False) == []                                 # launch, no peers
    assert st_.initial_targets(["192.0.2.1:6783"], resume=True) == []


def test_connect_replace_drops_the_replaced_targets_and_their_retries() -> None:
    async def run() -> None:
        node = MeshNode(Identity("7e:00:00:00:00:01", "h1", 1, 1, 1))
        dialed: list[tuple[str, int]] = []

        async def dial(host: str, port: int) -> str:
            dialed.append((host, port))
            raise OSError("connection refused")

        maker = ConnectionMaker(node, dial, discovery=False)
        maker.start()
        try:
            maker.add_direct([("192.0.2.1", 6783), ("192.0.2.2", 6783)])
            for _ in range(100):
                if all(t.state == "failed" for t in maker.targets.values()):
                    break
                await asyncio.sleep(0.01)
            assert {t.state for t in maker.targets.values()} == {"failed"}
            replaced = maker.add_direct([("192.0.2.3", 6783)], replace=True)
            assert sorted(replaced) == ["192.0.2.1:6783", "192.0.2.2:6783"]
            assert maker.direct() == ["192.0.2.3:6783"]
            assert set(maker.targets) == {("192.0.2.3", 6783)}   # no failed entries with a retry left
        finally:
            maker.stop()

    asyncio.run(run())


def test_weave_metric_names_from_a_recorded_report() -> None:
    report = json.loads((FIXTURES / "report_mesh.json").read_text())
    report["router"]["terminations"] = 4
    report["connections"].append({"address": "192.0.2.6:6783", "peer": None, "outbound": True,
                                  "state": "pending", "info": "connecting", "mode": None})
    report["connections"][0]["info"] = "encrypted"
    m = scrape(lambda: report)
    conns = m["weave_connections"]
    assert conns[(("encryption", "yes"), ("state", "established"), ("type", "fastdp"))] == 1
    assert conns[(("encryption", ""), ("state", "established"), ("type", "sleeve"))] == 1
    assert conns[(("encryption", ""), ("state", "retrying"), ("type", "unknown"))] == 1
    assert conns[(("encryption", ""), ("state", "connecting"), ("type", "unknown"))] == 1
    assert conns[(("encryption", ""), ("state", "failed"), ("type", "unknown"))] == 0
    assert m["weave_connection_terminations_total"][()] == 4
    assert m["weave_flows"][()] == 4
    assert m["weave_ips"][(("state", "local-used"),)] == 3
    assert m["weave_max_ips"][()] == 1 << 20
    assert m["weave_ipam_pending_allocates"][()] == 0
    assert m["weave_dns_entries"][(("state", "local"),)] == 1   # only this peer's entries, as Weave counts
    assert m["weave_fdp_up"][()] == 1                           # our own series stay


def test_weave_ipam_dns_absent_when_those_parts_do_not_run() -> None:
    report = json.loads((FIXTURES / "report_minimal.json").read_text())
    m = scrape(lambda: report)
    assert "weave_ips" not in m and "weave_dns_entries" not in m and "weave_max_ips" not in m
    assert "weave_connections" in m
