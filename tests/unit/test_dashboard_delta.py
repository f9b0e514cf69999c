"""The ``top`` op (changed and top-N flows) and the dashboard's copy of the flow table."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from weave_fdp.dashboard.flow_cache import MARGIN_S, FlowCache, flow_key
from weave_fdp.dashboard.source import RouterSource
from weave_fdp.errors import UsageError
from weave_fdp.router import flow_delta
from weave_fdp.router.api import ApiServer
from weave_fdp.router.client import RouterClient

from tests.unit.api_server import serving


def row(k: int, nbytes: int, last_seen: float | None) -> dict[str, Any]:
    return {"src_mac": f"0a:58:00:00:00:{k:02x}", "dst_mac": "0a:58:00:00:00:ff", "src_ip": f"10.32.0.{k}",
            "dst_ip": "10.40.0.1", "proto": "tcp", "sport": 1000 + k, "dport": 80, "packets": nbytes // 100,
            "bytes": nbytes, "last_seen": last_seen, "path": "fastdp", "via": "7e:00:00:00:00:02"}


def test_select_changed_and_top_n() -> None:
    flows = [row(1, 500, 10.0), row(2, 9000, 5.0), row(3, 100, 12.0), row(4, 50, None)]
    assert flow_delta.select_flows(flows, None, None) == flows
    assert flow_delta.select_flows(flows, None, 1) == [flows[1]]
    assert flow_delta.select_flows(flows, 9.0, None) == [flows[0], flows[2], flows[3]]   # no last_seen: sent
    assert flow_delta.select_flows(flows, 11.0, 1) == [flows[1], flows[2], flows[3]]
    rep = flow_delta.top_report({"datapath": {"flows": flows, "drops": {}}, "peers": []}, 13.0, 11.0, 0)
    assert rep["as_of"] == 13.0 and rep["datapath"]["flows_total"] == 4 and len(rep["datapath"]["flows"]) == 2
    assert flow_delta.top_report({"datapath": None}, 1.0, None, None) == {"datapath": None, "as_of": 1.0}


def test_bad_args_are_usage_errors() -> None:
    assert flow_delta.check_args({}) == (None, None)
    for args in ({"since": "x"}, {"since": float("nan")}, {"limit": -1}, {"limit": 1.5},
                 {"limit": flow_delta.MAX_LIMIT + 1}, {"since": True}):
        with pytest.raises(UsageError):
            flow_delta.check_args(args)


class FakeRouter:
    """A flow table that changes between calls, answered as the router's ``top`` op does."""

    def __init__(self) -> None:
        self.flows: dict[int, dict[str, Any]] = {}
        self.now = 1000.0
        self.calls: list[dict[str, Any]] = []

    def step(self, changes: list[tuple[int, int]], evict: list[int]) -> None:
        self.now += 1.0
        for k, add in changes:
            old = self.flows.get(k)
            self.flows[k] = row(k, (old["bytes"] if old else 0) + add, self.now - 0.3)
        for k in evict:
            self.flows.pop(k, None)

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append({"op": op, **args})
        rep = {"version": "t", "datapath": {"flows": copy.deepcopy(list(self.flows.values())), "drops": {}}}
        if op == "report":
            return rep
        since, limit = flow_delta.check_args(args)
        return flow_delta.top_report(rep, self.now - 0.1, since, limit)


CHANGES = st.lists(st.tuples(st.integers(0, 20), st.integers(1, 5000)), max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(CHANGES, st.lists(st.integers(0, 20), max_size=3)), min_size=1, max_size=25))
def test_the_copy_equals_the_table(steps: list[tuple[list[tuple[int, int]], list[int]]]) -> None:
    """After every fetch each row of the router's table is in the copy as it is there; rows the
    router evicted may linger only until the next full fetch."""
    router, clock = FakeRouter(), [0.0]
    src = RouterSource(client=router, clock=lambda: clock[0])
    full_since_evict = True
    for changes, evict in steps:
        router.step(changes, evict)
        clock[0] += 1.0
        if evict:
            full_since_evict = False
        got = src.fetch()["datapath"]["flows"]
        have = {flow_key(r): r for r in got}
        want = {flow_key(r): r for r in router.flows.values()}
        assert all(have.get(k) == r for k, r in want.items())
        if router.calls[-1]["since"] is None:
            full_since_evict = True
        if full_since_evict:
            assert have == want
    assert router.calls[0]["since"] is None and all(c["op"] == "top" for c in router.calls)


def test_deltas_carry_only_changed_rows_and_resync_drops_evicted_ones() -> None:
    router, clock = FakeRouter(), [0.0]
    src = RouterSource(client=router, clock=lambda: clock[0])
    router.step([(k, 100) for k in range(50)], [])
    assert len(src.fetch()["datapath"]["flows"]) == 50
    router.step([(3, 100)], [7])
    clock[0] += 1.0
    assert len(src.fetch()["datapath"]["flows"]) == 50              # 7 lingers: the router's count says so
    assert router.calls[-1]["since"] == pytest.approx(router.now - 1.0 - 0.1 - MARGIN_S)
    router.step([], [])
    clock[0] += 1.0
    assert len(src.fetch()["datapath"]["flows"]) == 49 and router.calls[-1]["since"] is None
    router.step([(1, 5)], [])
    clock[0] += 1.0
    ans = router.call("top", **FlowCache().request(0.0) | {"since": router.now - 1.5, "limit": 0})
    assert [r["src_ip"] for r in ans["datapath"]["flows"]] == ["10.32.0.1"]   # one changed row on the wire


@pytest.fixture
def api() -> Iterator[tuple[str, ApiServer]]:
    """A real API server on an abstract socket; the test registers the ops it serves."""
    with serving({}) as s:
        yield s


def test_an_older_router_without_top_gets_report(api: Any) -> None:
    name, srv = api
    flows = [row(k, 100 * k, 5.0) for k in range(1, 4)]

    async def report(args: dict) -> dict:
        return {"version": "old", "datapath": {"flows": flows, "drops": {}}}

    srv.register("report", report)
    src = RouterSource(client=RouterClient(name, timeout=5))
    for _ in range(2):
        assert src.fetch()["datapath"]["flows"] == flows
    assert src.deltas is False


def test_a_router_with_top_is_asked_for_deltas(api: Any) -> None:
    name, srv = api
    flows = [row(k, 100 * k, 5.0) for k in range(1, 4)]
    asked: list[dict] = []

    async def top(args: dict) -> dict:
        asked.append(args)
        since, limit = flow_delta.check_args(args)
        return flow_delta.top_report({"version": "new", "datapath": {"flows": flows, "drops": {}}}, 6.0,
                                     since, limit)

    srv.register("top", top)
    src = RouterSource(client=RouterClient(name, timeout=5))
    assert src.fetch()["datapath"]["flows"] == flows
    assert src.fetch()["datapath"]["flows"] == flows
    assert src.deltas and asked == [{"since": None, "limit": None}, {"since": 6.0 - MARGIN_S, "limit": 0}]
