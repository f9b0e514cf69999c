"""Sealing, per-direction keys and the replay window (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.crypto import Opener, ReplayWindow, Sealer

A = wire.name_to_bytes("7e:00:00:00:00:01")
B = wire.name_to_bytes("7e:00:00:00:00:02")
C = wire.name_to_bytes("7e:00:00:00:00:03")
S = b"s" * 32


def _open(op: Opener, dg: bytes) -> bytes:
    return op.open(memoryview(dg), wire.decode_header(dg))


def cause(op: Opener, dg: bytes) -> str:
    with pytest.raises(wire.WireError) as ei:
        _open(op, dg)
    return ei.value.cause


def test_seal_open_and_no_plaintext_on_the_wire() -> None:
    body = bytes([wire.T_FRAMES]) + b"secret inner frame" * 4
    dg = Sealer(S, A, B).seal(body)
    assert b"secret inner frame" not in dg
    assert _open(Opener(S, B, A), dg) == body


def test_replayed_forged_truncated_wrong_key_refused() -> None:
    sa, ob = Sealer(S, A, B), Opener(S, B, A)
    dg = sa.seal(b"\x01hello")
    assert _open(ob, dg) == b"\x01hello"
    assert cause(ob, dg) == "replay"
    dg2 = bytearray(sa.seal(b"\x01hello"))
    dg2[-1] ^= 1
    assert cause(ob, bytes(dg2)) == "auth-failed"
    assert cause(Opener(b"x" * 32, B, A), sa.seal(b"\x01hi")) == "auth-failed"
    with pytest.raises(wire.WireError) as ei:
        wire.decode_header(sa.seal(b"\x01hi")[:20])
    assert ei.value.cause == "truncated"
    # the forged packet did not move the window: the next genuine one opens
    assert _open(ob, sa.seal(b"\x01again")) == b"\x01again"


def test_directions_have_separate_keys_and_sequences() -> None:
    ab, ba = Sealer(S, A, B), Sealer(S, B, A)
    assert ab.key != ba.key
    assert cause(Opener(S, B, A), ba.seal(b"\x01x")) == "auth-failed"   # reflected back to its sender
    assert _open(Opener(S, A, B), ba.seal(b"\x01x")) == b"\x01x"
    # a third peer claiming to be A cannot produce A's key without the secret
    assert cause(Opener(S, B, A), Sealer(b"other", C, B).seal(b"\x01x")[:2] + A +
                 Sealer(b"other", C, B).seal(b"\x01x")[8:]) == "auth-failed"


def test_window_reordering_old_and_duplicates() -> None:
    w = ReplayWindow(size=64)
    for s in (5, 3, 4, 1, 2):
        assert w.check(s) is None and w.commit(s)
    assert w.check(3) == "replay" and w.check(0) == "replay" and not w.commit(3)
    assert w.commit(100)
    assert w.check(100) == "replay"
    assert w.check(100 - 64) == "too-old" and w.check(5) == "too-old"
    assert w.check(99) is None and w.check(37) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3000), max_size=200))
def test_window_accepts_each_number_at_most_once(seqs: list[int]) -> None:
    w = ReplayWindow(size=128)
    accepted: list[int] = []
    for s in seqs:
        if w.check(s) is None and w.commit(s):
            accepted.append(s)
    assert len(accepted) == len(set(accepted))
    top = 0
    for s in accepted:
        assert s > top - 128
        top = max(top, s)


def test_in_place_seal_and_open_match_the_copying_ones() -> None:
    body = bytes([wire.T_FRAMES]) + bytes(range(256)) * 40
    buf = bytearray(64 + len(body))
    buf[64:] = body
    sa = Sealer(S, A, B)
    dg = bytes(sa.seal_inplace(memoryview(buf), 64, 64 + len(body)))
    assert len(dg) == wire.HEADER.size + wire.SEAL_OVERHEAD + len(body)
    assert _open(Opener(S, B, A), dg) == body              # the copying opener reads it
    ob = Opener(S, B, A)
    rx = bytearray(sa.seal(body))
    got = ob.open(memoryview(rx), wire.decode_header(rx), inplace=True)
    assert isinstance(got, memoryview) and bytes(got) == body
    rx2 = bytearray(sa.seal(body))
    rx2[-1] ^= 1
    before = bytes(rx2)
    with pytest.raises(wire.WireError) as ei:
        ob.open(memoryview(rx2), wire.decode_header(rx2), inplace=True)
    assert ei.value.cause == "auth-failed" and bytes(rx2) == before   # nothing written on failure
