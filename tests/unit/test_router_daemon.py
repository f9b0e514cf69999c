"""Router daemon pieces without a router: the connection-mode rule and the --metrics-addr check."""

from __future__ import annotations

import pytest

from weave_fdp.errors import UsageError
from weave_fdp.router.config import RouterConfig, parse_metrics_addr
from weave_fdp.router.connection_rows import connection_mode

FAST_OK = {"mode": "fastdp", "reason": None, "mtu": 1450, "rtt_ms": 0.2}
SLEEVE_OK = {"mode": "sleeve", "reason": None, "mtu": 1414, "rtt_ms": 0.4}
NO_SLEEVE = {"mode": None, "reason": "peer has no sleeve", "mtu": None, "rtt_ms": None}
BLOCKED = {"mode": None, "reason": "no datagrams from 192.0.2.3:6783 (UDP blocked?)", "mtu": 1414, "rtt_ms": None}


def decided(mode: str, reason: str | None = None) -> dict:
    return {"mode": mode, "reason": reason, "history": []}


def test_switch_overrides_a_healthy_fastdp() -> None:
    # fastdp answers first (most preferred) but the switch still has the peer on sleeve
    st = connection_mode(decided("sleeve", "fastdp heartbeats lost"), [("fastdp", FAST_OK), ("sleeve", SLEEVE_OK)])
    assert st["mode"] == "sleeve" and st["reason"] == "fastdp heartbeats lost" and st["mtu"] == 1414


def test_switch_choosing_fastdp_is_reported_as_fastdp() -> None:
    st = connection_mode(decided("fastdp"), [("fastdp", FAST_OK), ("sleeve", SLEEVE_OK)])
    assert st == FAST_OK


def test_chosen_overlay_that_cannot_carry_says_why_twice() -> None:
    st = connection_mode(decided("sleeve", "peer has no fastdp"), [("fastdp", FAST_OK), ("sleeve", BLOCKED)])
    assert st["mode"] is None
    assert st["reason"] == "peer has no fastdp; sleeve: no datagrams from 192.0.2.3:6783 (UDP blocked?)"
    st = connection_mode(decided("sleeve", "peer has no fastdp"), [("fastdp", FAST_OK)])   # no sleeve here
    assert st["mode"] is None and st["reason"] == "peer has no fastdp; sleeve: not running on this host"


def test_without_a_switch_verdict_the_preferred_overlay_wins() -> None:
    assert connection_mode(None, [("fastdp", FAST_OK), ("sleeve", NO_SLEEVE)])["mode"] == "fastdp"
    assert connection_mode({"mode": None, "reason": "not decided yet"}, [("fastdp", FAST_OK)])["mode"] == "fastdp"
    assert connection_mode(None, [("sleeve", SLEEVE_OK)])["mode"] == "sleeve"


def test_no_mode_names_every_reason() -> None:
    st = connection_mode(None, [("fastdp", {"mode": None, "reason": "waiting for fastdp heartbeats"}),
                                ("sleeve", NO_SLEEVE)])
    assert st["mode"] is None
    assert st["reason"] == "fastdp: waiting for fastdp heartbeats; sleeve: peer has no sleeve"
    assert connection_mode(None, [])["reason"] == "no overlay running"


@pytest.mark.parametrize("addr,want", [("0.0.0.0:6782", ("0.0.0.0", 6782)), (":9100", ("0.0.0.0", 9100)),
                                       ("[::1]:6782", ("::1", 6782))])
def test_metrics_addr_accepted(addr: str, want: tuple[str, int]) -> None:
    assert parse_metrics_addr(addr) == want
    assert RouterConfig(metrics_addr=addr).validate().metrics_addr == addr


@pytest.mark.parametrize("addr", ["nonsense", "1.2.3.4", "host:0", "host:70000", ""])
def test_metrics_addr_refused_with_the_flag_named(addr: str) -> None:
    with pytest.raises(UsageError, match="--metrics-addr") as ei:
        RouterConfig(metrics_addr=addr).validate()
    assert "\n" not in str(ei.value) and "6782" in str(ei.value)


def test_metrics_off_by_default() -> None:
    assert RouterConfig().validate().metrics_addr is None


def test_a_request_to_a_router_still_starting_is_a_clear_error(tmp_path, monkeypatch) -> None:
    """Not an internal error with a traceback: the router is slow, not broken."""
    import asyncio

    from weave_fdp.errors import ExitCode
    from weave_fdp.router import daemon

    monkeypatch.setattr(daemon, "READY_WAIT_S", 0.05)

    async def op(args: dict) -> str:
        return "served"

    async def main() -> tuple[dict, dict]:
        router = daemon.Router(RouterConfig(state_dir=tmp_path))
        router.api.register("probe-op", router._when_ready(op))
        early = await router.api.dispatch(b'{"op": "probe-op"}')
        router.ready.set()
        return early, await router.api.dispatch(b'{"op": "probe-op"}')

    early, late = asyncio.run(main())
    assert not early["ok"] and early["error"]["exit_code"] == ExitCode.ROUTER_NOT_RUNNING
    assert "still starting" in early["error"]["message"]
    assert late == {"ok": True, "result": "served"}


def test_connection_rows_share_one_shape() -> None:
    """Links, dialed targets and failed inbound sources: the same keys, plus each kind's own."""
    from types import SimpleNamespace

    from weave_fdp.router import connection_rows as rows

    link = SimpleNamespace(peer="7e:00:00:00:00:02", features=SimpleNamespace(nickname="h2", overlays=("fastdp",)),
                           outbound=True, established=True, cipher=None, tx_bytes=5, rx_bytes=6, protocol_version=2)
    lr = rows.link_row(link, "192.0.2.2:6783", {"mode": "fastdp", "reason": None, "mtu": 1450, "rtt_ms": 0.2,
                                                "encrypted": None})
    target = SimpleNamespace(address="192.0.2.3:6783", peer=None, state="failed", last_error="refused",
                             retry_at=110.0, attempts=3, direct=True)
    tr = rows.target_row(target, 100.0, 1000.0)
    failure = SimpleNamespace(source="192.0.2.9", attempts=2, first=0.0, last=12.34, reason="bad handshake")
    fr = rows.failure_row(failure)
    common = set(rows.ConnectionRow.__dataclass_fields__) - {"extra"}
    assert common <= set(lr) and common <= set(tr) and common <= set(fr)
    assert lr["state"] == "established" and lr["mode"] == "fastdp" and lr["info"] == "unencrypted"
    assert lr["overlays"] == ["fastdp"] and lr["encryption"] is None and lr["protocol_version"] == 2
    assert tr["state"] == "failed" and tr["retry_at"] == 1010.0 and tr["attempts"] == 3 and tr["direct"]
    assert fr["outbound"] is False and fr["info"].startswith("2 failed attempts since ")
    assert fr["info"].endswith("last: bad handshake") and fr["at"] == 12.3
