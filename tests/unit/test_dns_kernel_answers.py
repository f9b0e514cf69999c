"""The router keeps the kernel's DNS map in step with its snapshots (kernel_answers.py),
against a fastdp control that records what it is told."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from weave_fdp.datapath import dns_plan
from weave_fdp.errors import DatapathError
from weave_fdp.router.dns.kernel_answers import KernelAnswers
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.snapshot import Snapshot

pytestmark = pytest.mark.unit

SETTINGS = dns_plan.DnsSettings("169.254.53.53", 53, 1_000_000, 1_999_000_000)


class Control:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[bytes, dns_plan.DnsEntry]]] = []
        self.fail = 0
        self.gate: asyncio.Event | None = None

    async def set_dns_fastpath(self, settings: Any, entries: dict[bytes, dns_plan.DnsEntry]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise DatapathError("cannot update BPF map fdp_dns_names: no space")
        self.calls.append((settings, dict(entries)))

    def dns_fastpath_stats(self) -> dict[str, int]:
        return {"answered": 3}


def snap(names: dict[str, list[str]]) -> Snapshot:
    recs = Records("02:00:00:00:00:01")
    for name, addrs in names.items():
        for i, a in enumerate(addrs):
            recs.add(name, f"netns:{name}{i}", a, now=1.0)
    return Snapshot.build(recs.unordered(), recs.generation)


def names_of(entries: dict[bytes, dns_plan.DnsEntry]) -> set[str]:
    return {dns_plan.name_of_key(k) for k in entries}


def test_each_snapshot_reaches_the_kernel_newest_winning() -> None:
    async def go() -> None:
        c = Control()
        k = KernelAnswers(c, SETTINGS, "weave.local.", 1)
        c.gate = asyncio.Event()
        k.on_snapshot(snap({"a.weave.local.": ["10.32.0.1"]}))
        await asyncio.sleep(0)
        k.on_snapshot(snap({"a.weave.local.": ["10.32.0.1"], "b.weave.local.": ["10.32.0.2"]}))
        k.on_snapshot(snap({"b.weave.local.": ["10.32.0.2"], "x.example.": ["10.32.0.3"]}))
        c.gate.set()
        await k.flush()
        # the first push was under way; of the two that waited, only the newest went
        assert [names_of(e) for _, e in c.calls] == [{"a.weave.local."}, {"b.weave.local."}]
        assert all(s == SETTINGS for s, _ in c.calls) and k.names == 1
        assert k.stats() == {"answered": 3, "on": True, "names": 1, "error": None}
        await k.set_enabled(False)
        assert c.calls[-1] == (None, {}) and k.stats()["names"] == 0
        await k.set_enabled(True)
        assert names_of(c.calls[-1][1]) == {"b.weave.local."}
        await k.stop()
        assert c.calls[-1] == (None, {})
        k.on_snapshot(snap({"c.weave.local.": ["10.32.0.4"]}))   # after stop: nothing more
        await asyncio.sleep(0)
        assert c.calls[-1] == (None, {})

    asyncio.run(go())


def test_a_failed_write_is_reported_and_the_next_snapshot_retries() -> None:
    async def go() -> None:
        c = Control()
        c.fail = 1
        k = KernelAnswers(c, SETTINGS, "weave.local.", 1)
        k.on_snapshot(snap({"a.weave.local.": ["10.32.0.1"]}))
        await k.flush()
        assert c.calls == [] and "no space" in (k.error or "")
        k.on_snapshot(snap({"a.weave.local.": ["10.32.0.1"]}))
        await k.flush()
        assert k.error is None and names_of(c.calls[-1][1]) == {"a.weave.local."}

    asyncio.run(go())
