"""Wire version 2: pieces of a logical datagram, their reassembly, AES-256-GCM sealing,
and the heartbeat that negotiates them (pure)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import PieceAssembler
from weave_fdp.datapath.sleeve.crypto import Opener, Sealer, aesgcm_available
from weave_fdp.errors import ProtocolError

A = wire.name_to_bytes("7e:00:00:00:00:01")
B = wire.name_to_bytes("7e:00:00:00:00:02")
S = b"s" * 32
SEG = 1472
needs_gcm = pytest.mark.skipif(not aesgcm_available(), reason="libsodium has no AES-256-GCM on this CPU")


def key_of(piece: bytes) -> bytes:
    return piece[1:16]          # flags, sender, seq: what the forwarder keys partials by


def reassemble(pieces: list[bytes], asm: PieceAssembler | None = None) -> bytearray | None:
    asm = asm or PieceAssembler()
    out = None
    for p in pieces:
        pc = wire.decode_piece(p)
        got = asm.add(key_of(p), pc.total, pc.offset, pc.chunk, 0.0)
        if got is not None:
            out = got
    return out


def test_pieces_round_trip_in_any_order_with_duplicates() -> None:
    data = os.urandom(65000)
    pieces = wire.split_pieces(A, 7, data, SEG, sealed=False)
    assert all(len(p) == SEG for p in pieces[:-1]) and len(pieces[-1]) <= SEG   # one UDP_SEGMENT train
    assert len(pieces) == -(-len(data) // (SEG - wire.PIECE.size))
    pc = wire.decode_piece(pieces[3])
    assert (pc.sealed, pc.aesgcm, pc.sender, pc.seq, pc.total, pc.offset) == \
        (False, False, A, 7, len(data), 3 * (SEG - wire.PIECE.size))
    shuffled = pieces + pieces[:5]
    random.Random(1).shuffle(shuffled)
    asm = PieceAssembler()
    assert bytes(reassemble(shuffled, asm)) == data
    assert len(asm) == 0 or asm.duplicates   # duplicates after completion start a new partial at most


def test_piece_decoder_refuses_what_the_reassembler_relies_on() -> None:
    good = wire.split_pieces(A, 1, bytes(3000), SEG, sealed=True)[1]
    for bad, cause in (
        (good[:wire.PIECE.size], "truncated"),
        (b"\x01" + good[1:], "bad-version"),
        (good[:1] + b"\x04" + good[2:], "bad-flags"),
        (good[:1] + bytes([wire.FLAG_AESGCM]) + good[2:], "bad-flags"),     # AES-GCM without SEALED
        (good[:16] + (10).to_bytes(4, "big") + good[20:], "bad-length"),         # chunk beyond total
        (good[:16] + (wire.MAX_PIECED + 1).to_bytes(4, "big") + bytes(4) + good[24:], "bad-length"),
    ):
        with pytest.raises(wire.WireError) as ei:
            wire.decode_piece(bad)
        assert ei.value.cause == cause


def test_assembler_expires_bounds_and_refuses_changed_totals() -> None:
    asm = PieceAssembler(timeout=1.0, max_partial=4)
    for i in range(6):
        asm.add(bytes([0]) + A + i.to_bytes(8, "big"), 5000, 0, memoryview(bytes(100)), float(i) * 0.1)
    assert len(asm) == 4 and asm.expired == 2
    with pytest.raises(wire.WireError):
        asm.add(bytes([0]) + A + (5).to_bytes(8, "big"), 6000, 100, memoryview(bytes(100)), 0.6)
    assert asm.expire(5.0) == 4 and len(asm) == 0


def _sealed_pieces(sa: Sealer, body: bytes, gcm: bool) -> list[bytes]:
    buf = bytearray(64 + len(body) + 16)
    mv = memoryview(buf)
    mv[64:64 + len(body)] = body
    seq, box = (sa.seal_gcm_inplace if gcm else sa.seal_box_inplace)(mv, 64, 64 + len(body))
    return wire.split_pieces(A, seq, box, SEG, sealed=True, aesgcm=gcm)


def _open_pieces(ob: Opener, pieces: list[bytes]) -> bytes:
    pc = wire.decode_piece(pieces[0])
    data = reassemble(pieces)
    assert data is not None
    opened = ob.open_gcm_box if pc.aesgcm else ob.open_box
    return bytes(opened(memoryview(data), pc.seq))


@pytest.mark.parametrize("gcm", [False, pytest.param(True, marks=needs_gcm)], ids=["secretbox", "aes256gcm"])
def test_sealed_pieces_hide_the_body_and_refuse_forged_replayed_wrong_key(gcm: bool) -> None:
    body = bytes([wire.T_FRAMES]) + b"secret inner frame" * 3000
    sa, ob = Sealer(S, A, B), Opener(S, B, A)
    pieces = _sealed_pieces(sa, body, gcm)
    assert not any(b"secret inner frame" in p for p in pieces)
    assert _open_pieces(ob, pieces) == body

    def cause(ps: list[bytes], opener: Opener = ob) -> str:
        with pytest.raises(wire.WireError) as ei:
            _open_pieces(opener, ps)
        return ei.value.cause

    assert cause(pieces) == "replay"                                   # the same train again
    forged = _sealed_pieces(sa, body, gcm)
    forged[2] = forged[2][:-1] + bytes([forged[2][-1] ^ 1])            # one flipped bit in one piece
    assert cause(forged) == "auth-failed"
    mixed = _sealed_pieces(sa, body, gcm)
    other = _sealed_pieces(sa, body, gcm)                              # same length, next seq
    mixed[1] = mixed[1][:8] + other[1][8:16] + mixed[1][16:]           # piece relabelled: lost, not mixed
    assert reassemble(mixed) is None
    assert cause(_sealed_pieces(sa, body, gcm), Opener(b"x" * 32, B, A)) == "auth-failed"
    # forged pieces did not move the window: the next genuine train opens
    assert _open_pieces(ob, _sealed_pieces(sa, body, gcm)) == body


@needs_gcm
def test_aesgcm_matches_the_reference_and_shares_the_sequence_space() -> None:
    aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
    sa = Sealer(S, A, B)
    assert sa.gcm_key != sa.key                            # never one key for two ciphers
    body = os.urandom(5000)
    buf = bytearray(64 + len(body) + 16)
    buf[64:64 + len(body)] = body
    seq, box = sa.seal_gcm_inplace(memoryview(buf), 64, 64 + len(body))
    assert bytes(box) == aead.AESGCM(sa.gcm_key).encrypt(bytes(4) + seq.to_bytes(8, "big"), body, None)
    assert wire.decode_header(sa.seal(b"\x01x")).seq == seq + 1       # one counter per direction


def test_heartbeat_advertises_version_and_features_and_v1_decoders_ignore_them() -> None:
    hb = wire.encode_heartbeat(123, 1472, wire.PIECE_VERSION, wire.FEATURE_AESGCM)
    body = memoryview(hb)[1:]
    assert wire.heartbeat_version(body) == (2, wire.FEATURE_AESGCM)
    assert wire.decode_fixed(body, wire.HB, "heartbeat") == (123, 1472)    # what a v1 peer reads
    old = memoryview(bytes([wire.T_HEARTBEAT]) + wire.HB.pack(1, 1472))[1:]
    assert wire.heartbeat_version(old) == (1, 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_piece_decoder_raises_only_protocol_errors(data: bytes) -> None:
    try:
        pc = wire.decode_piece(b"\x02" + data)
    except ProtocolError:
        return
    assert pc.offset + len(pc.chunk) <= pc.total <= wire.MAX_PIECED
    PieceAssembler().add(b"\x02" + data[:14], pc.total, pc.offset, pc.chunk, 0.0)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=9000), st.integers(200, 1472), st.randoms(use_true_random=False))
def test_fuzz_split_and_reassemble_any_order(data: bytes, seg: int, rnd: random.Random) -> None:
    pieces = wire.split_pieces(B, 99, data, seg, sealed=False)
    rnd.shuffle(pieces)
    assert bytes(reassemble(pieces)) == data


@needs_gcm
def test_aesgcm_in_place_refuses_a_buffer_without_tailroom() -> None:
    buf = memoryview(bytearray(100))
    with pytest.raises(ValueError):
        Sealer(S, A, B).seal_gcm_inplace(buf, 10, 90)      # 10 bytes after the body, 16 needed
    with pytest.raises(ValueError):
        Sealer(S, A, B).seal_gcm_inplace(memoryview(bytes(100)), 10, 50)   # read-only
