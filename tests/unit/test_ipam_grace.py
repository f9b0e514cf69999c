"""Containers and IPAM: a vanished target keeps its addresses for the grace period, then they are
free; an explicit claim may take the address of a vanished target at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from weave_fdp.router import containers as cmod
from weave_fdp.router.ipam.addr import ip_int
from weave_fdp.router.ipam.allocator import Mode
from weave_fdp.router.ipam.service import IpamService

pytestmark = pytest.mark.unit

RANGE = (ip_int("10.32.0.0"), ip_int("10.48.0.0"))


def test_grace_then_free(tmp_path: Path) -> None:
    async def main() -> None:
        now = [100.0]
        svc = IpamService("02:00:00:00:00:01", RANGE, RANGE, Mode("consensus", 1), tmp_path, clock=lambda: now[0])
        live: dict[str, int] = {"vethweplaaa": 5}

        async def run(fn, *a, **kw):   # the datapath edge: only host_links is asked for here
            return dict(live)

        c = cmod.Containers(host=None, state_dir=tmp_path, run=run, ipam=svc, clock=lambda: now[0])
        cidr = await svc.allocate("netns:web", RANGE, timeout=1)
        c.attached["vethweplaaa"] = {"target": "netns:web", "ident": "netns:web", "cidrs": [cidr]}
        await c.sweep()
        assert "netns:web" not in c.vanished
        live.clear()                                  # the container died: its veth went with it
        now[0] += 1
        await c.sweep()
        assert "netns:web" in c.vanished and svc.alloc.owned_by("netns:web")
        now[0] += cmod.GRACE_S - 2
        await c.sweep()
        assert svc.alloc.owned_by("netns:web")        # still held: a restart would get it back
        # ... but an explicit claim by another target takes it at once
        assert await c._claim("netns:other", cidr, timeout=1)
        assert svc.alloc.owned_by("netns:other") == [ip_int(cidr.split("/")[0])]
        now[0] += 3
        await c.sweep()
        assert "netns:web" not in c.vanished and not svc.alloc.owned_by("netns:web")

    asyncio.run(main())
