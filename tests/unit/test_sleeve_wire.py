"""Sleeve wire codec, batching, fragmentation and reassembly (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher, Reassembler, fragment
from weave_fdp.errors import ProtocolError

A = wire.name_to_bytes("7e:00:00:00:00:01")
B = wire.name_to_bytes("7e:00:00:00:00:02")
FRAME = bytes(range(6)) + bytes(range(6, 12)) + b"\x08\x00" + b"x" * 50


def test_names_round_trip_and_bad_names_refused() -> None:
    assert wire.bytes_to_name(A) == "7e:00:00:00:00:01"
    for bad in ("7e:00:00:00:00", "zz:00:00:00:00:01", "7e0000000001", ""):
        with pytest.raises(ProtocolError):
            wire.name_to_bytes(bad)


def test_header_round_trip_and_version_refused() -> None:
    dg = wire.encode_header(A) + bytes([wire.T_HEARTBEAT]) + wire.HB.pack(1, 2)
    h = wire.decode_header(dg)
    assert (h.sealed, h.sender, h.body_offset) == (False, A, 8)
    with pytest.raises(wire.WireError) as ei:
        wire.decode_header(bytes([2]) + dg[1:])
    assert ei.value.cause == "bad-version"
    with pytest.raises(wire.WireError) as ei:
        wire.decode_header(dg[:5])
    assert ei.value.cause == "truncated"


def test_entries_round_trip() -> None:
    body = b"".join([wire.encode_entry(A, B, FRAME), FRAME, wire.encode_entry(B, A, FRAME, ttl=3), FRAME])
    es = list(wire.iter_entries(memoryview(body)))
    assert [(e.src, e.dst, e.ttl, bytes(e.payload)) for e in es] == [(A, B, 16, FRAME), (B, A, 3, FRAME)]


def test_entry_longer_than_declared_data_is_refused() -> None:
    body = wire.encode_entry(A, B, FRAME) + FRAME[:-1]
    with pytest.raises(wire.WireError) as ei:
        list(wire.iter_entries(memoryview(body)))
    assert ei.value.cause == "bad-length"


def test_batcher_packs_up_to_limit_per_hop() -> None:
    b = Batcher()
    hdr = wire.encode_entry(A, B, FRAME)
    per = len(hdr) + len(FRAME)
    limit = 1 + 3 * per
    done = []
    for _ in range(7):
        done += b.add("h1", hdr, FRAME, limit)
    done += b.add("h2", hdr, FRAME, limit)
    done += b.drain()
    sizes = sorted((hop, len(body)) for hop, body in done)
    assert sizes == [("h1", 1 + per), ("h1", limit), ("h1", limit), ("h2", 1 + per)]
    assert all(len(list(wire.iter_entries(memoryview(body)[1:]))) >= 1 for _, body in done)
    assert b.drain() == []
    with pytest.raises(ValueError):
        b.add("h1", hdr, FRAME, per)


def test_fragment_equal_sizes_and_reassembly_any_order() -> None:
    frame = bytes(i % 251 for i in range(65000))
    bodies = fragment(A, B, frame, wire.E_VNET, 7, 1400)
    assert all(len(x) == 1400 for x in bodies[:-1]) and len(bodies[-1]) <= 1400
    r = Reassembler()
    out = None
    for body in reversed(bodies):
        (e,) = wire.iter_entries(memoryview(body)[1:])
        assert e.is_frag
        fid, off, total, chunk = wire.decode_frag(e.payload)
        res = r.add(e.src, fid, off, total, chunk, e.flags)
        if res is not None:
            out = res
    assert out == (frame, wire.E_VNET) and len(r) == 0


def test_reassembler_expires_and_bounds_memory() -> None:
    r = Reassembler(timeout=1.0, max_partial=4)
    for i in range(10):
        assert r.add(A, i, 0, 100, memoryview(b"x" * 10), 0, now=0.0) is None
    assert len(r) == 4 and r.expired == 6
    assert r.expire(now=5.0) == 4 and len(r) == 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoders_raise_only_protocol_errors(data: bytes) -> None:
    try:
        h = wire.decode_header(data)
    except ProtocolError:
        return
    body = memoryview(data)[h.body_offset:]
    try:
        t = wire.body_type(body)
        if t == wire.T_FRAMES:
            for e in wire.iter_entries(body[1:]):
                if e.is_frag:
                    wire.decode_frag(e.payload)
        else:
            wire.decode_fixed(body[1:], wire.HB, "x")
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=14, max_size=200), min_size=1, max_size=20), st.binary(max_size=40))
def test_fuzz_valid_bodies_with_garbage_tail(frames: list[bytes], tail: bytes) -> None:
    body = b"".join(wire.encode_entry(A, B, f) + f for f in frames)
    assert [bytes(e.payload) for e in wire.iter_entries(memoryview(body))] == frames
    try:
        got = [bytes(e.payload) for e in wire.iter_entries(memoryview(body + tail))]
        assert got[:len(frames)] == frames
    except ProtocolError:
        pass
