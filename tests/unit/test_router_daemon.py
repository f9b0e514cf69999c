"""Router daemon pieces without a router: the connection-mode rule and the --metrics-addr check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from weave_fdp.errors import UsageError
from weave_fdp.router.config import RouterConfig, parse_metrics_addr
from weave_fdp.router.daemon import connection_mode, is_switch
from weave_fdp.router.overlay.switch import OverlaySwitch

FAST_OK = {"mode": "fastdp", "reason": None, "mtu": 1450, "rtt_ms": 0.2}
SLEEVE_WAIT = {"mode": "sleeve", "reason": "waiting for fastdp heartbeats", "mtu": 1414, "rtt_ms": 0.4}
SLEEVE_SAYS_FAST = {"mode": "fastdp", "reason": None, "mtu": 1450, "rtt_ms": 0.4}
NO_SLEEVE = {"mode": None, "reason": "peer has no sleeve", "mtu": None, "rtt_ms": None}


def test_switch_overrides_a_healthy_fastdp() -> None:
    # fastdp answers first (most preferred) but the switch still has the peer on sleeve
    st = connection_mode([("fastdp", FAST_OK, False), ("sleeve", SLEEVE_WAIT, True)])
    assert st["mode"] == "sleeve" and st["reason"] == "waiting for fastdp heartbeats"


def test_switch_choosing_fastdp_is_reported_as_fastdp() -> None:
    st = connection_mode([("fastdp", {"mode": None, "reason": "switch chose sleeve"}, False),
                          ("sleeve", SLEEVE_SAYS_FAST, True)])
    assert st["mode"] == "fastdp"


def test_without_a_switch_verdict_the_preferred_overlay_wins() -> None:
    assert connection_mode([("fastdp", FAST_OK, False), ("sleeve", NO_SLEEVE, True)])["mode"] == "fastdp"
    assert connection_mode([("fastdp", FAST_OK, False)])["mode"] == "fastdp"  # --no-sleeve host
    sleeve_only = {"mode": "sleeve", "reason": None, "mtu": 1414, "rtt_ms": 1.0}
    assert connection_mode([("sleeve", sleeve_only, False)])["mode"] == "sleeve"


def test_no_mode_names_every_reason() -> None:
    st = connection_mode([("fastdp", {"mode": None, "reason": "waiting for fastdp heartbeats"}, False),
                          ("sleeve", NO_SLEEVE, True)])
    assert st["mode"] is None
    assert st["reason"] == "fastdp: waiting for fastdp heartbeats; sleeve: peer has no sleeve"
    assert connection_mode([])["reason"] == "no overlay running"


def test_is_switch_recognises_the_overlay_owning_the_switch() -> None:
    from weave_fdp.router.overlay.sleeve import SleeveOverlay

    assert is_switch(SleeveOverlay(RouterConfig()))
    assert is_switch(SimpleNamespace(name="x", switch=OverlaySwitch()))
    assert not is_switch(SimpleNamespace(name="fastdp"))
    assert not is_switch(SimpleNamespace(name="odd", switch="not a switch"))


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
