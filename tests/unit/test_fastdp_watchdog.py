"""The fastdp overlay's watchdog decisions: repair, give up with a reason, back off, recover."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from weave_fdp.datapath.fastdp import watchdog
from weave_fdp.router.config import RouterConfig
from weave_fdp.router.overlay.fastdp import FastdpOverlay


@pytest.fixture
def overlay(monkeypatch) -> FastdpOverlay:
    ov = FastdpOverlay(RouterConfig())
    ov.host = SimpleNamespace(dp=object(), ports={}, underlay_devs=set(), mesh=None, netns=None, mtu=1450,
                              mac_ageing_s=300.0, sync_host_port=lambda: False,
                              pin_dir="/tmp/none")
    monkeypatch.setattr(ov, "_apply_now", lambda: None)
    monkeypatch.setattr(watchdog, "prune_ports", lambda host: [])
    return ov


def test_whole_datapath_is_left_alone(overlay, monkeypatch) -> None:
    monkeypatch.setattr(watchdog, "find_damage", lambda host: [])
    monkeypatch.setattr(watchdog, "repair", lambda host: pytest.fail("repaired a whole datapath"))
    overlay._watch()
    assert overlay.repairs == 0 and overlay.fatal is None


def test_failed_repair_makes_fastdp_unusable_then_recovers(overlay, monkeypatch) -> None:
    monkeypatch.setattr(watchdog, "find_damage", lambda host: ["device vxlan-6784 is gone"])
    calls = []

    def broken(host) -> None:
        calls.append(1)
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(watchdog, "repair", broken)
    overlay._watch()
    assert overlay.fatal and overlay.fatal.startswith("fastdp failed:")
    assert overlay.unusable_reason("p") == overlay.fatal                 # the switch moves p to sleeve
    assert overlay.connection_status("p")["reason"] == overlay.fatal
    overlay._watch()
    assert len(calls) == 1                                              # backing off: no reload storm
    overlay.repair_backoff.next_at = 0.0                               # the backoff has passed
    monkeypatch.setattr(watchdog, "repair", lambda host: None)
    overlay._watch()
    assert overlay.fatal is None and overlay.repairs == 1
    assert overlay.unusable_reason("p") is None
    assert overlay.status()["watchdog"] == {"repairs": 1, "last_damage": ["device vxlan-6784 is gone"], "fatal": None}
