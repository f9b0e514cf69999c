"""weaveDNS services on an in-memory mesh: names travel, removals travel, late joiners
catch up, a peer that leaves takes its names with it, a restart restores local names,
and the API ops refuse bad input with one clear error."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from weave_fdp.errors import NotFound, UsageError
from weave_fdp.router.config import RouterConfig
from weave_fdp.router.dns import service as service_mod
from weave_fdp.router.dns.service import DnsService, parse_listen
from weave_fdp.router.mesh import sim

pytestmark = pytest.mark.unit


class FakeApi:
    def __init__(self) -> None:
        self.ops: dict[str, Any] = {}

    def register(self, op: str, fn: Any) -> None:
        self.ops[op] = fn

    def handler(self, op: str) -> Any:
        return self.ops.get(op)


def make_service(node: Any, state_dir: Path) -> DnsService:
    """A service as the router makes it (joined to ``node`` at once); ``svc.test_ctx`` to start it."""
    ctx = SimpleNamespace(config=RouterConfig().validate(), api=FakeApi(), state_dir=state_dir,
                          local=SimpleNamespace(name=node.name), mesh=node, container_listeners=[],
                          sections={})
    ctx.add_report_section = lambda key, fn: ctx.sections.__setitem__(key, fn)
    svc = DnsService(ctx.config, state_dir, node.name)
    svc.join(node)
    svc.test_ctx = ctx   # type: ignore[attr-defined]
    return svc


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def mesh_of(tmp_path: Path, n: int) -> tuple[list[Any], list[DnsService]]:
    nodes = [sim.make_node(i + 1, gossip_interval=0, gc_grace=0.2) for i in range(n)]
    svcs = []
    for i, node in enumerate(nodes):
        svc = make_service(node, tmp_path / f"h{i + 1}")
        (tmp_path / f"h{i + 1}").mkdir()
        await svc.start(svc.test_ctx, serve=False)
        svcs.append(svc)
    for a, b in zip(nodes, nodes[1:]):      # a line: names must be relayed
        sim.connect(a, b)
    await wait_for(lambda: sim.converged(nodes))
    return nodes, svcs


async def stop_all(nodes: list[Any], svcs: list[DnsService]) -> None:
    for s in svcs:
        await s.stop()
    for n in nodes:
        n.stop()


def test_names_and_removals_travel_the_line(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a, b, c) = await mesh_of(tmp_path, 3)
        try:
            a.add("web.weave.local.", "netns:w1", ["10.32.0.1"])
            c.add("web.weave.local.", "netns:w2", ["10.32.0.2"])
            await wait_for(lambda: all(len(s.records.lookup("WEB.weave.local.")) == 2 for s in (a, b, c)))
            res = await b.ctx.api.ops["dns-lookup"]({"name": "web"})
            assert sorted(res["addrs"]) == ["10.32.0.1", "10.32.0.2"]
            await a.ctx.api.ops["dns-remove"]({"target": "netns:w1"})
            await wait_for(lambda: all(s.records.lookup("web.weave.local.") == ["10.32.0.2"] for s in (a, b, c)))
            rows = b.report()["entries"]
            assert [(r["name"], r["address"], r["origin"]) for r in rows] == \
                [("web.weave.local.", "10.32.0.2", nodes[2].name)]
        finally:
            await stop_all(nodes, [a, b, c])
    asyncio.run(run())


def test_late_joiner_gets_everything_and_a_leaver_takes_its_names(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a, b) = await mesh_of(tmp_path, 2)
        late = sim.make_node(9, gossip_interval=0, gc_grace=0.2)
        (tmp_path / "h9").mkdir()
        d = make_service(late, tmp_path / "h9")
        await d.start(d.test_ctx, serve=False)
        try:
            a.add("db.weave.local.", "weave:extern", ["10.32.5.5"])
            await wait_for(lambda: b.records.lookup("db.weave.local.") == ["10.32.5.5"])
            d.add("late.weave.local.", "netns:x", ["10.32.9.9"])
            sim.connect(late, nodes[1])
            await wait_for(lambda: d.records.lookup("db.weave.local.") == ["10.32.5.5"])
            await wait_for(lambda: a.records.lookup("late.weave.local.") == ["10.32.9.9"])
            for link in list(late.links.values()):       # the late peer leaves
                link.close("test: peer leaves")
            await wait_for(lambda: a.records.lookup("late.weave.local.") == [] and
                           b.records.lookup("late.weave.local.") == [])
            assert nodes[0].name in b.records.origins()
        finally:
            await stop_all([*nodes, late], [a, b, d])
    asyncio.run(run())


def test_restart_restores_local_names_and_answers_stale_copies(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a, b) = await mesh_of(tmp_path, 2)
        try:
            a.add("keep.weave.local.", "netns:k", ["10.32.1.1"])
            a.add("gone.weave.local.", "netns:g", ["10.32.1.2"])
            await wait_for(lambda: b.records.known("gone.weave.local."))
            # the router of a restarts; meanwhile gone's removal was persisted before the stop
            a.remove(container="netns:g")
            await a.stop()
            nodes[0].channels.pop("dns")
            fresh = make_service(nodes[0], a.file.parent)
            await fresh.start(fresh.test_ctx, serve=False)
            assert fresh.records.lookup("keep.weave.local.") == ["10.32.1.1"]
            assert not fresh.records.known("gone.weave.local.")
            # b still has a stale live copy of gone (say it missed the tombstone): b's full state
            # reaching the origin makes the origin answer with a higher version
            stale = [e for e in b.records.entries() if e.hostname == "gone.weave.local."]
            fresh.on_gossip(nodes[1].name, service_mod.wire.encode(stale))
            await wait_for(lambda: not b.records.known("gone.weave.local."))
            await fresh.stop()
        finally:
            await stop_all(nodes, [b])
    asyncio.run(run())


def test_ops_refuse_bad_input(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a,) = await mesh_of(tmp_path, 1)
        ops = a.ctx.api.ops
        try:
            with pytest.raises(UsageError, match="outside the weave network"):
                await ops["dns-add"]({"addrs": ["192.168.1.1"], "hostname": "x"})
            with pytest.raises(UsageError, match="bad address"):
                await ops["dns-add"]({"addrs": ["10.32.1"], "hostname": "x"})
            with pytest.raises(UsageError, match="bad label"):
                await ops["dns-add"]({"addrs": ["10.32.1.1"], "hostname": "bad name"})
            with pytest.raises(UsageError, match="outside the DNS domain"):
                await ops["dns-add"]({"addrs": ["10.32.1.1"], "hostname": "x.example.com"})
            with pytest.raises(UsageError, match="needs its addresses"):
                await ops["dns-add"]({"hostname": "x"})
            with pytest.raises(UsageError, match="TARGET or -h"):
                await ops["dns-add"]({"addrs": ["10.32.1.1"]})
            with pytest.raises(NotFound):
                await ops["dns-lookup"]({"name": "nothing"})
            with pytest.raises(NotFound):
                await ops["dns-remove"]({"addrs": ["10.32.1.1"], "hostname": "x"})
            res = await ops["dns-add"]({"addrs": ["10.32.1.1", "10.32.1.2"], "hostname": "ext"})
            assert res == {"name": "ext.weave.local.", "container": "weave:extern",
                           "addrs": ["10.32.1.1", "10.32.1.2"]}
            res = await ops["dns-remove"]({"addrs": ["10.32.1.2"], "hostname": "EXT.weave.local"})
            assert [r["addr"] for r in res["removed"]] == ["10.32.1.2"]
            assert a.records.lookup("ext.weave.local.") == ["10.32.1.1"]
        finally:
            await stop_all(nodes, [a])
    asyncio.run(run())


def test_bad_gossip_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a,) = await mesh_of(tmp_path, 1)
        try:
            for _ in range(50):
                assert a.on_gossip("02:00:00:00:00:77", b"\x81\xa1v\x09") is None
            assert len(a.records) == 0
            cause = "gossip 02:00:00:00:00:77"
            assert a.rl.total[cause] == 50
            assert a.rl._causes[cause].suppressed == 49     # logged once per interval, not per message
        finally:
            await stop_all(nodes, [a])
    asyncio.run(run())


def test_parse_listen() -> None:
    assert parse_listen("169.254.53.53") == ("169.254.53.53", 53)
    assert parse_listen("10.1.2.3:5353") == ("10.1.2.3", 5353)
    for bad in ("nope", "1.2.3.4:0", "1.2.3.4:x", "::1"):
        with pytest.raises(UsageError):
            parse_listen(bad)
    with pytest.raises(UsageError, match="--dns-domain"):
        RouterConfig(dns_domain="bad domain").validate()
    with pytest.raises(UsageError, match="--dns-ttl"):
        RouterConfig(dns_ttl=-1).validate()
    assert RouterConfig(dns_domain="corp.internal").validate().dns_domain == "corp.internal."


def test_attach_names(tmp_path: Path) -> None:
    async def run() -> None:
        nodes, (a,) = await mesh_of(tmp_path, 1)
        try:
            assert a._attach_name("netns:web1", {}) == "web1.weave.local."
            assert a._attach_name("netns:web.1", {}) is None          # not a label: no name
            assert a._attach_name("pid:42", {}) is None
            assert a._attach_name("/proc/42/ns/net", {}) is None
            assert a._attach_name("pid:42", {"hostname": "api"}) == "api.weave.local."
            assert a._attach_name("pid:42", {"hostname": "a.b.weave.local"}) == "a.b.weave.local."
            assert a._attach_name("netns:x", {"name": "svc"}) == "svc.weave.local."
            with pytest.raises(UsageError, match="attached, but without a DNS name"):
                a._attach_name("netns:x", {"hostname": "api.example.com"})
            with pytest.raises(UsageError, match="bad label"):
                a._attach_name("netns:x", {"name": "bad name"})
        finally:
            await stop_all(nodes, [a])
    asyncio.run(run())
