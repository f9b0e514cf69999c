"""The router's switch driver (inputs from the mesh view, decisions pushed to fastdp) and
report sections filled by several parts."""

from __future__ import annotations

import asyncio
from typing import Any

from weave_fdp.datapath.sleeve.flows import merge_datapath
from weave_fdp.router.config import RouterConfig
from weave_fdp.router.overlay.base import DirectConnection, MeshView, PeerInfo, RouterContext
from weave_fdp.router.overlay.switch import R_ESP, R_PEER, SwitchDriver, offer_fastdp


class FakeFastdp:
    """A FastdpControl whose heartbeats the test sets."""

    supports_encryption = False

    def __init__(self) -> None:
        self.hb: dict[str, float | None] = {}
        self.pushed: list[tuple[str, str]] = []

    def unusable_reason(self, peer: str) -> str | None:
        return None

    def last_heartbeat(self, peer: str) -> float | None:
        return self.hb.get(peer)

    def set_mode(self, peer: str, mode: str) -> None:
        self.pushed.append((peer, mode))

    def mtu(self, peer: str) -> int | None:
        return 1450

    def floods_by_sleeve(self, peer: str) -> bool:
        return False


def ctx_for(config: RouterConfig) -> RouterContext:
    me = PeerInfo("aa:00:00:00:00:01", "h1", 1, 1, True)
    return RouterContext(api=None, config=config, state_dir=None, local=me,  # type: ignore[arg-type]
                         send_overlay_control=lambda p, b: True, loop=asyncio.new_event_loop())


def view(*conns: DirectConnection) -> MeshView:
    me = PeerInfo("aa:00:00:00:00:01", "h1", 1, 1, True)
    peers = {me.name: me, **{c.peer: PeerInfo(c.peer, c.peer, 2, 2, True) for c in conns}}
    return MeshView(local=me, peers=peers, connections={c.peer: c for c in conns}, unicast={}, broadcast={})


def conn(peer: str, ip: str, overlays: tuple[str, ...] = ("fastdp", "sleeve")) -> DirectConnection:
    return DirectConnection(peer, ip, 6783, True, True, overlays)


def test_driver_moves_to_fastdp_with_heartbeats_and_pushes_each_change() -> None:
    ctx = ctx_for(RouterConfig())
    fd = FakeFastdp()
    offer_fastdp(ctx, fd)
    drv = SwitchDriver(ctx)
    drv.on_mesh(view(conn("p2", "192.0.2.2"), conn("p3", "192.0.2.3", ("sleeve",))))
    drv.tick(now=10.0)
    assert drv.mode("p2") == "sleeve" and drv.mode("p3") == "sleeve"
    assert drv.status("p3")["reason"] == R_PEER
    fd.hb["p2"] = 10.1
    drv.tick(now=10.2)
    assert drv.mode("p2") == "fastdp"
    assert fd.pushed == [("p2", "sleeve"), ("p3", "sleeve"), ("p2", "fastdp")]
    assert set(drv.report()) == {"p2", "p3"}
    # the connection goes away: forgotten, its next incarnation starts from scratch
    drv.on_mesh(view(conn("p3", "192.0.2.3", ("sleeve",))))
    assert "p2" not in drv.report()
    ctx.loop.close()


def test_driver_encryption_and_trusted_subnets() -> None:
    ctx = ctx_for(RouterConfig(password="s3cret", trusted_subnets=["192.0.2.0/25"]))
    fd = FakeFastdp()
    offer_fastdp(ctx, fd)
    drv = SwitchDriver(ctx)
    fd.hb = {"in": 5.0, "out": 5.0}
    drv.on_mesh(view(conn("in", "192.0.2.5"), conn("out", "192.0.2.200")))
    drv.tick(now=5.1)
    assert drv.mode("in") == "fastdp"                      # trusted: plain fastdp
    assert (drv.mode("out"), drv.status("out")["reason"]) == ("sleeve", R_ESP)
    ctx.loop.close()


def test_driver_without_fastdp_says_so() -> None:
    ctx = ctx_for(RouterConfig())
    drv = SwitchDriver(ctx)
    drv.on_mesh(view(conn("p2", "192.0.2.2")))
    drv.tick(now=1.0)
    assert drv.status("p2")["reason"] == "fastdp not running on this host"
    ctx.loop.close()


def test_report_section_merge_does_not_depend_on_start_order() -> None:
    fastdp = {"flows": [{"src_mac": "a", "path": "fastdp"}], "peers": [{"peer": "x"}], "drops": {"loop": 1}}
    sleeve = {"flows": [{"src_mac": "b"}], "peers": [{"peer": "y"}], "drops": {"replayed": 2}}
    results = []
    for order in ("fastdp first", "sleeve first"):
        ctx = ctx_for(RouterConfig())
        parts: list[tuple[Any, Any]] = [(lambda: fastdp, None), (lambda: sleeve, merge_datapath)]
        for fn, merge in (parts if order == "fastdp first" else parts[::-1]):
            ctx.add_report_section("datapath", fn, merge=merge)
        results.append(ctx.report_section("datapath"))
        ctx.loop.close()
    assert results[0] == results[1]
    assert results[0]["drops"] == {"loop": 1, "sleeve-replayed": 2}
    assert [f["src_mac"] for f in results[0]["flows"]] == ["a", "b"]


def test_report_section_alone_and_failing_part() -> None:
    ctx = ctx_for(RouterConfig())
    ctx.add_report_section("datapath", lambda: {"flows": [], "peers": [], "drops": {"x": 1}}, merge=merge_datapath)
    assert ctx.report_section("datapath")["drops"] == {"sleeve-x": 1}      # --no-fastdp: the sleeve alone

    def broken() -> dict:
        raise RuntimeError("map gone")

    ctx.add_report_section("datapath", broken)
    assert ctx.report_section("datapath")["drops"] == {"sleeve-x": 1}      # a failing part is skipped
    assert ctx.report_section("nothing") is None
    ctx.loop.close()
