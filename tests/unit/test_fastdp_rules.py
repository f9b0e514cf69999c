"""The fastdp overlay's pure rules: heartbeat health, keep-lost/startup grace, floods across overlays."""

from __future__ import annotations

import errno

import msgpack
from hypothesis import given, strategies as st

from weave_fdp.datapath.plan import MeshInputs
from weave_fdp.router.overlay import fastdp_floods as floods
from weave_fdp.router.overlay.fastdp_grace import (GRACE, STARTUP_GRACE, LostConnections, StartupGrace,
                                                   accepts_fastdp, mode_for)
from weave_fdp.router.overlay.fastdp_health import HEALTHY_WITHIN, REPAIR_BACKOFF_MAX, HeartbeatHealth, RepairBackoff
from weave_fdp.router.overlay.switch import R_MTU

# ---------------------------------------------------------------- heartbeat health


def test_pong_makes_healthy_for_a_while() -> None:
    hb = HeartbeatHealth()
    assert hb.next_ping("a") == 1 and hb.next_ping("a") == 2
    hb.sent("a")
    assert not hb.healthy("a", 100.0)
    hb.pong("a", 100.0, 0.123456)
    assert hb.healthy("a", 100.0 + HEALTHY_WITHIN - 0.01)
    assert not hb.healthy("a", 100.0 + HEALTHY_WITHIN)
    assert hb.peers["a"].rtt_ms == 0.123 and hb.peers["a"].received == 1 and hb.peers["a"].sent == 1
    assert hb.why_not_fastdp("a", 100.5, None) == "heartbeats answered; the switch has not moved back yet"
    assert hb.why_not_fastdp("a", 110.0, None) == "fastdp heartbeats lost"
    assert hb.why_not_fastdp("b", 110.0, None) == "waiting for fastdp heartbeats"
    assert hb.why_not_fastdp("a", 100.5, "fastdp failed: x") == "fastdp failed: x"


def test_mtu_error_is_static_other_errors_only_before_a_pong() -> None:
    hb = HeartbeatHealth()
    hb.send_failed("a", errno.EMSGSIZE, "Message too long")
    assert hb.unusable("a") == R_MTU
    hb.send_failed("b", errno.EHOSTUNREACH, "No route to host")
    assert hb.unusable("b") == "heartbeat send failed: No route to host"
    hb.pong("b", 5.0, 1.0)
    assert hb.unusable("b") is None                       # it worked once: health decides now
    hb.pong("a", 5.0, 1.0)
    assert hb.unusable("a") == R_MTU                      # mtu whatever came back
    hb.sent("a")
    assert hb.unusable("a") is None and hb.why_not_fastdp("a", 5.1, None).startswith("heartbeats answered")


def test_retarget_forgets_peers() -> None:
    hb = HeartbeatHealth()
    for p in "abc":
        hb.next_ping(p)
    hb.retarget({"b"})
    assert set(hb.peers) == {"b"}
    assert set(hb.status(0.0, {"b": "fastdp"})) == {"b"} and hb.status(0.0, {"b": "fastdp"})["b"]["mode"] == "fastdp"


def test_repairs_back_off_and_start_again_after_one_works() -> None:
    b = RepairBackoff()
    assert b.due(0.0)
    waits = []
    now = 100.0
    for _ in range(8):
        b.failed(now)
        assert not b.due(now + 0.5)
        waits.append(b.next_at - now)
        now = b.next_at
        assert b.due(now)
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0] and max(waits) == REPAIR_BACKOFF_MAX
    b.succeeded()
    assert b.due(now)
    b.failed(now)
    assert b.next_at - now == 2.0                            # the series starts again


# ---------------------------------------------------------------- startup grace and modes


def test_startup_grace_keeps_the_kernel_entries_for_a_while() -> None:
    g = StartupGrace(started=50.0, boot_fastdp={3})
    assert g.holds_kernel(False, 50.0 + STARTUP_GRACE - 0.1)
    assert not g.holds_kernel(True, 51.0)                   # the mesh is back
    assert not g.holds_kernel(False, 50.0 + STARTUP_GRACE)  # grace over
    assert not StartupGrace(started=50.0).holds_kernel(False, 51.0)   # nothing found
    assert g.was_fastdp(3, 51.0) and not g.was_fastdp(4, 51.0) and not g.was_fastdp(None, 51.0)
    assert not g.was_fastdp(3, 50.0 + STARTUP_GRACE)


def test_last_heartbeat_of_a_peer_fastdp_before_the_restart() -> None:
    g = StartupGrace(started=0.0, boot_fastdp={3})
    g.connections({"a"}, {"a", "b"}, 2.0)
    g.connections({"a", "b"}, {"a", "b"}, 3.0)
    assert g.seen_at == {"a": 2.0, "b": 3.0}                # first seen, not last
    assert g.last_heartbeat("a", None, True) == 2.0         # the hold counts from the connection
    assert g.last_heartbeat("a", None, False) is None       # a new peer waits for a pong
    assert g.last_heartbeat("a", 7.0, True) == 7.0
    g.connections(set(), {"b"}, 4.0)
    assert g.seen_at == {"b": 3.0}


def test_mode_and_receive_rules() -> None:
    assert mode_for("a", {"a": "sleeve"}, True) == "sleeve"   # the switch's decision wins
    assert mode_for("a", {}, True) == "fastdp" and mode_for("a", {}, False) == "sleeve"
    assert accepts_fastdp("fastdp", False, "mtu")
    assert accepts_fastdp("sleeve", True, None)               # the peer's switch may be a moment ahead
    assert not accepts_fastdp("sleeve", True, "mtu") and not accepts_fastdp("sleeve", False, None)


# ---------------------------------------------------------------- keep-lost


def _mesh(conns: dict[str, str], modes: str = "fastdp", far_via: str | None = None) -> MeshInputs:
    """Local "L"; direct neighbours ``conns`` (peer -> ip), short IDs 10 + index in "abcd";
    with ``far_via``, peer "far" is reached through that neighbour."""
    sids = {"L": 1, **{p: 10 + "abcd".index(p) for p in conns}}
    m = MeshInputs(local="L", short_ids=sids, hop_ips=dict(conns), modes={p: modes for p in conns},
                   receive={p: modes for p in conns}, unicast={p: p for p in conns},
                   broadcast={"L": sorted(conns)})
    if far_via is not None:
        m.short_ids["far"] = 99
        m.unicast["far"] = far_via
    return m


def test_lost_fastdp_connection_is_kept_for_the_grace() -> None:
    lost = LostConnections()
    lost.keep(_mesh({"a": "192.0.2.2", "b": "192.0.2.3"}, far_via="a"), {"a", "b"}, 0.0, lambda p: False)
    now_mesh = _mesh({"b": "192.0.2.3"})
    lost.keep(now_mesh, {"b"}, 1.0, lambda p: False)
    assert "a" in lost and lost.lost_at == {"a": 1.0}
    assert now_mesh.hop_ips["a"] == "192.0.2.2" and now_mesh.modes["a"] == "fastdp"
    assert now_mesh.unicast["far"] == "a" and now_mesh.short_ids["far"] == 99   # the route through it stays
    assert "a" in now_mesh.broadcast["L"]
    assert lost.targets() == {"a": (10, "192.0.2.2")}
    later = _mesh({"b": "192.0.2.3"})
    lost.keep(later, {"b"}, 1.0 + GRACE + 0.1, lambda p: False)
    assert "a" not in lost and "a" not in later.hop_ips and lost.targets() == {}


def test_lost_connection_whose_kernel_answers_stays_past_the_grace() -> None:
    lost = LostConnections()
    lost.keep(_mesh({"a": "192.0.2.2"}), {"a"}, 0.0, lambda p: True)
    for t in (1.0, GRACE + 5, 3 * GRACE):
        m = _mesh({})
        lost.keep(m, set(), t, lambda p: True)
        assert m.hop_ips == {"a": "192.0.2.2"}


def test_lost_sleeve_connection_is_not_kept_and_a_returning_peer_keeps_its_short_id() -> None:
    lost = LostConnections()
    lost.keep(_mesh({"a": "192.0.2.2"}, modes="sleeve"), {"a"}, 0.0, lambda p: False)
    m = _mesh({})
    lost.keep(m, set(), 1.0, lambda p: False)
    assert m.hop_ips == {}                                   # only fastdp entries are worth keeping
    back = MeshInputs(local="L", short_ids={"L": 1}, hop_ips={"a": "192.0.2.2"})
    lost2 = LostConnections()
    lost2.keep(_mesh({"a": "192.0.2.2"}), {"a"}, 0.0, lambda p: False)
    lost2.keep(back, {"a"}, 1.0, lambda p: False)            # topology lacks its new incarnation yet
    assert back.short_ids["a"] == 10 and "a" not in lost2


@given(st.lists(st.sampled_from("abcd"), max_size=4, unique=True),
       st.lists(st.sampled_from("abcd"), max_size=4, unique=True),
       st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=3 * GRACE), st.booleans())
def test_keep_never_overrides_a_live_connection(before: list[str], after: list[str], t_lost: float, dt: float,
                                                alive: bool) -> None:
    """Live connections keep their own entries; a lost fastdp one is kept from the moment its
    loss is seen, for the grace, or as long as its kernel answers heartbeats."""
    lost = LostConnections()
    lost.keep(_mesh({p: f"192.0.2.{i + 2}" for i, p in enumerate(before)}), set(before), 0.0, lambda p: alive)
    now = {p: f"198.51.100.{i + 2}" for i, p in enumerate(after)}
    for t in (t_lost, t_lost + dt):
        m = _mesh(now, modes="sleeve")
        lost.keep(m, set(after), t, lambda p: alive)
        for p in after:
            assert m.hop_ips[p] == now[p] and m.modes[p] == "sleeve" and p not in lost
        for p in set(before) - set(after):
            kept = alive or t - t_lost <= GRACE
            assert (p in m.hop_ips) == kept and (p in lost) == kept
            assert not kept or (m.modes[p] == "fastdp" and m.short_ids[p] == 10 + "abcd".index(p))
        assert all(s >= 0 for s in m.short_ids.values())


# ---------------------------------------------------------------- floods


def test_floods_message_roundtrip_and_refusals() -> None:
    msg = floods.decode(floods.encode({"b", "a"}, True))
    assert msg == floods.FloodsMessage(esp=True, sources=frozenset({"a", "b"}))
    assert floods.decode(msgpack.packb({"o": "sleeve", "t": "floods", "s": []})) is None
    assert floods.decode(b"\xc1garbage") is None
    bad = floods.decode(msgpack.packb({"o": "fastdp", "t": "floods", "s": [1, 2], "esp": True}))
    assert bad == floods.FloodsMessage(esp=True, sources=None)
    too_many = floods.decode(floods.encode([f"p{i}" for i in range(floods.MAX_SOURCES + 1)], False))
    assert too_many is not None and too_many.sources is None


@given(st.binary(max_size=64))
def test_floods_decode_never_raises(data: bytes) -> None:
    floods.decode(data)


def test_needs_sleeve_and_kernel_hops() -> None:
    bcast = {"s1": ["a", "b"], "s2": ["b"], "s3": ["c"], "L": ["a", "b"]}
    modes = {"a": "sleeve", "b": "fastdp", "c": "fastdp"}
    need = floods.needs_sleeve(bcast, {"a", "b", "c"}, modes.__getitem__, {"c": frozenset({"s3"})})
    assert need == {"s1", "s3", "L"}                         # a hop on sleeve, or c said so of s3
    assert floods.needs_sleeve(bcast, {"b"}, modes.__getitem__, {}) == frozenset()   # a not established
    hops = floods.kernel_hops(bcast, {"a", "b"}, "L", lambda h: h == "a")
    assert hops == {"s1": ["a", "b"], "s2": ["b"], "s3": [], "L": ["b"]}


def test_flood_book() -> None:
    book = floods.FloodBook()
    assert book.heard("a", frozenset({"s"})) and not book.heard("a", frozenset({"s"}))
    assert book.relays_into_sleeve("a", "s") and not book.relays_into_sleeve("b", "s")
    assert book.to_send("a", frozenset())
    book.sent["a"] = frozenset()
    assert not book.to_send("a", frozenset())
    book.forget({"b"})
    assert book.told == {} and book.sent == {}
