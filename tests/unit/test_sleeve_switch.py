"""The overlay switch: hold on missed heartbeats, move back when they return, static reasons."""

from __future__ import annotations

from weave_fdp.router.overlay.switch import R_ESP, R_LOST, R_NO_LOCAL, R_PEER, R_WAIT, Inputs, OverlaySwitch


def inp(hb: float | None, **kw) -> Inputs:
    d = dict(local_fastdp=True, peer_fastdp=True, encrypted=False, can_encrypt=False, unusable=None,
             last_heartbeat=hb)
    d.update(kw)
    return Inputs(**d)


def test_static_reasons() -> None:
    s = OverlaySwitch()
    assert s.decide("p", inp(0.0, peer_fastdp=False), now=0.1)[:2] == ("sleeve", R_PEER)
    assert s.decide("q", inp(0.0, local_fastdp=False), now=0.1)[:2] == ("sleeve", R_NO_LOCAL)
    assert s.decide("r", inp(0.0, encrypted=True), now=0.1)[:2] == ("sleeve", R_ESP)
    assert s.decide("r2", inp(0.0, encrypted=True, can_encrypt=True), now=0.1)[:2] == ("fastdp", None)
    assert s.decide("m", inp(0.0, unusable="mtu"), now=0.1)[:2] == ("sleeve", "mtu")


def test_hold_then_resume_and_never_stuck() -> None:
    s = OverlaySwitch(hold_after=1.5, resume_after=2.0)
    assert s.decide("p", inp(None), now=0.0)[0] == "sleeve"
    assert s.decide("p", inp(0.9), now=1.0)[:3] == ("fastdp", None, True)
    # heartbeats stop at t=5
    t = 5.0
    while t < 6.4:
        assert s.decide("p", inp(5.0), now=t)[0] == "fastdp"
        t += 0.25
    assert s.decide("p", inp(5.0), now=6.6)[:3] == ("sleeve", R_LOST, True)
    # back at t=20: not at once (steady for resume_after), then fastdp
    assert s.decide("p", inp(20.0), now=20.1)[:2] == ("sleeve", R_LOST)
    assert s.decide("p", inp(21.0), now=21.1)[0] == "sleeve"
    assert s.decide("p", inp(22.1), now=22.2)[:3] == ("fastdp", None, True)
    hist = s.status("p")["history"]
    assert [(h["from"], h["to"]) for h in hist] == [("sleeve", "fastdp"), ("fastdp", "sleeve"), ("sleeve", "fastdp")]
    # a flap (heartbeats interrupted during the resume wait) restarts the wait
    s.decide("p", inp(22.1), now=24.0)
    assert s.decide("p", inp(30.0), now=30.1)[0] == "sleeve"
    assert s.decide("p", inp(30.2), now=31.0)[0] == "sleeve"
    assert s.decide("p", inp(31.9), now=32.0)[0] == "fastdp"


def test_static_reason_overrides_health() -> None:
    s = OverlaySwitch()
    s.decide("p", inp(0.0), now=0.1)
    assert s.decide("p", inp(1.0, encrypted=True), now=1.1)[:3] == ("sleeve", R_ESP, True)


def test_first_decision_is_reported_as_a_change_so_fastdp_gets_it() -> None:
    s = OverlaySwitch()
    assert s.decide("p", inp(None, peer_fastdp=False), now=0.0) == ("sleeve", R_PEER, True)
    assert s.decide("p", inp(None, peer_fastdp=False), now=0.3) == ("sleeve", R_PEER, False)
    assert s.status("p")["history"] == []          # the first decision is not a transition
    assert s.mode("never-seen") == "sleeve"
    assert s.status("never-seen")["mode"] is None


def test_new_connection_moves_to_fastdp_with_its_first_heartbeat_without_resume_delay() -> None:
    s = OverlaySwitch(hold_after=1.5, resume_after=2.0)
    assert s.decide("p", inp(None), now=0.0)[:2] == ("sleeve", R_WAIT)
    assert s.decide("p", inp(0.2), now=0.25)[:3] == ("fastdp", None, True)


def test_restart_presumed_heartbeat_keeps_fastdp_then_holds_when_none_comes() -> None:
    """fastdp reports the time the connection came up as a heartbeat for a peer that was
    on fastdp before a restart: the switch keeps fastdp, and holds if no real one follows."""
    s = OverlaySwitch(hold_after=1.5, resume_after=2.0)
    assert s.decide("p", inp(10.0), now=10.1)[:3] == ("fastdp", None, True)
    assert s.decide("p", inp(10.0), now=11.4)[0] == "fastdp"
    assert s.decide("p", inp(10.0), now=11.6)[:3] == ("sleeve", R_LOST, True)


def test_unusable_reason_and_recovery_from_static_reason() -> None:
    s = OverlaySwitch()
    assert s.decide("p", inp(1.0, unusable="mtu"), now=1.1)[:2] == ("sleeve", "mtu")
    # the static reason goes away while heartbeats flow: fastdp at once
    assert s.decide("p", inp(1.2), now=1.3)[:3] == ("fastdp", None, True)


def test_lost_heartbeats_hold_within_hold_after_plus_one_tick() -> None:
    s = OverlaySwitch(hold_after=1.5, resume_after=2.0)
    s.decide("p", inp(0.0), now=0.0)
    t, last = 0.0, 0.0
    while s.decide("p", inp(last), now=t)[0] == "fastdp":
        t = round(t + 0.25, 2)
    assert 1.5 <= t <= 1.75


def test_flood_overlay_follows_the_connection_unless_the_hop_relays_into_sleeve() -> None:
    from weave_fdp.router.overlay.switch import flood_overlay
    assert flood_overlay("fastdp", False) == "fastdp"
    assert flood_overlay("fastdp", True) == "sleeve"
    assert flood_overlay("sleeve", False) == "sleeve"
