"""The receive path of the sleeve over GRO reads, with fake sockets: trains of pieces joined
in one read or across two, a piece of another train never slipping into a run."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher
from weave_fdp.datapath.sleeve.forwarder import Forwarder

LOCAL, PEER = bytes.fromhex("7e0000000001"), bytes.fromhex("7e0000000002")
ADDR = ("192.0.2.2", wire.PORT)
SEG = 1472


class _Port:
    """The bridge port: what the forwarder injects."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, b: bytes, *_a: object) -> int:
        self.frames.append(bytes(b))
        return len(b)

    def sendmsg(self, parts: list, *_a: object) -> int:
        self.frames.append(b"".join(bytes(p) for p in parts)[wire.VNET_LEN:])
        return sum(len(p) for p in parts)

    def setsockopt(self, *_a: object) -> None:
        pass


def _forwarder() -> tuple[Forwarder, _Port]:
    fw = Forwarder(LOCAL, "unused0")
    fw.set_peers({PEER: ADDR})
    fw.set_routes({PEER: PEER}, {PEER: [], LOCAL: [PEER]})
    port = _Port()
    fw.psock = fw.usock = port       # type: ignore[assignment]
    return fw, port


def _frame(n: int, tag: int) -> bytes:
    return bytes.fromhex("0a0000000001") + bytes([0x0a, 0, 0, 0, 0, tag]) + b"\x08\x00" + os.urandom(n - 14)


def _train(frame: bytes, seq: int) -> list[bytes]:
    body = bytes([wire.T_FRAMES]) + wire.encode_entry(PEER, LOCAL, frame) + frame
    return wire.split_pieces(PEER, seq, body, SEG, sealed=False)


def _read(fw: Forwarder, pieces: list[bytes]) -> None:
    """One GRO read of ``pieces`` (all but the last a full segment), as the receive loop hands it on."""
    buf = bytearray(b"".join(pieces))
    fw._rx_pieces(buf, memoryview(buf), 0, len(buf), SEG, ADDR, Batcher())


def test_a_train_in_one_read_and_one_in_two_reads_are_delivered_whole() -> None:
    fw, port = _forwarder()
    small, big = _frame(30000, 1), _frame(65000, 2)
    _read(fw, _train(small, 1))
    pieces = _train(big, 2)
    assert len(pieces) == 45          # 64 KiB needs one piece more than a 64 KiB GSO train holds
    _read(fw, pieces[:44])
    assert len(port.frames) == 1
    _read(fw, pieces[44:])
    assert port.frames == [small, big] and fw.drops.snapshot() == {}
    assert fw.links[PEER].stats["rx_pkts"] == len(_train(small, 1)) + 45


def test_a_piece_of_another_train_ends_a_run() -> None:
    """Train 1 lost its last piece; train 2 follows in the same read: nothing of train 2 may
    complete train 1, and train 2 is delivered."""
    fw, port = _forwarder()
    one, two = _frame(20000, 1), _frame(20000, 2)
    t1, t2 = _train(one, 1), _train(two, 2)
    _read(fw, t1[:-1] + t2)
    assert port.frames == [two]
    _read(fw, t1[-1:])               # the lost piece comes late: train 1 completes
    assert port.frames == [two, one] and fw.drops.snapshot() == {}


@settings(max_examples=40, deadline=None)
@given(st.integers(100, 64000), st.integers(1, 44), st.randoms(use_true_random=False))
def test_any_cut_of_a_train_into_reads_delivers_it_once(size: int, cut: int, rnd: object) -> None:
    fw, port = _forwarder()
    frame = _frame(size, 3)
    pieces = _train(frame, 9)
    cut = min(cut, len(pieces))
    first, rest = pieces[:cut], pieces[cut:]
    if len(first) > 1 and rest and rnd.random() < 0.5:       # type: ignore[attr-defined]
        first = [first[-1]] + first[:-1]            # out of order within the read: piece by piece
    _read(fw, first)
    if rest:
        _read(fw, rest)
    assert port.frames == [frame] and fw.drops.snapshot() == {}


def _whole(frame: bytes, flags: int = 0, dst: bytes = LOCAL) -> bytearray:
    entry = wire.encode_entry(PEER, dst, frame, flags=flags)
    return bytearray(wire.encode_header(PEER) + bytes([wire.T_FRAMES]) + entry + frame)


def _receive(fw: Forwarder, dg: bytearray) -> None:
    """A datagram of one read, as the receive loop hands it on."""
    mv = memoryview(dg)
    if not fw._fast_single(dg, mv, 0, len(dg), ADDR):
        fw._datagram(mv, ADDR, Batcher())


def test_one_small_frame_for_us_is_delivered_counted_and_its_mac_learned() -> None:
    fw, port = _forwarder()
    fw.links[PEER].last_rx = 1e12          # up: the fast path leaves "peer is up" to the full path
    ack = _frame(66, 7)
    dg = _whole(ack)
    assert fw._fast_single(dg, memoryview(dg), 0, len(dg), ADDR)
    assert port.frames == [ack] and fw.links[PEER].stats["rx_pkts"] == 1
    assert fw.macs[ack[6:12]][0] == PEER


def test_what_the_fast_path_does_not_take_the_full_path_names() -> None:
    fw, port = _forwarder()
    fw.links[PEER].last_rx = 1e12
    _receive(fw, _whole(_frame(66, 7)[:13]))                               # runt
    _receive(fw, _whole(_frame(66, 7), dst=bytes.fromhex("7e00000000ee")))  # not for us, no route
    assert port.frames == [] and fw.drops.snapshot() == {"runt": 1, "unknown-peer": 1}


def test_a_sealed_small_frame_is_opened_and_delivered() -> None:
    from weave_fdp.datapath.sleeve.crypto import Sealer
    secret = b"k" * 32
    fw = Forwarder(LOCAL, "unused0", secret_for=lambda peer: secret)
    fw.set_peers({PEER: ADDR})
    port = _Port()
    fw.psock = fw.usock = port       # type: ignore[assignment]
    ack = _frame(66, 8)
    sealed = bytearray(Sealer(secret, PEER, LOCAL).seal(bytes([wire.T_FRAMES]) + wire.encode_entry(PEER, LOCAL, ack)
                                                        + ack))
    _receive(fw, sealed)
    assert port.frames == [ack] and fw.drops.snapshot() == {}
    _receive(fw, sealed)                                                    # the same again: a replay
    assert port.frames == [ack] and fw.drops.snapshot() == {"replay": 1}


def test_a_piece_seen_twice_across_reads_is_ignored() -> None:
    """The network duplicated a piece of the first run: the datagram still completes only
    when every byte is there, and is delivered once, intact."""
    fw, port = _forwarder()
    frame = _frame(30000, 4)
    pieces = _train(frame, 5)
    _read(fw, pieces[:10])
    _read(fw, pieces[3:4])                       # a duplicate of a piece of the run
    assert port.frames == [] and fw._pieces.duplicates == 1
    _read(fw, pieces[10:])
    assert port.frames == [frame]


def _piece_run_one_by_one(buf: bytearray, p: int, n: int, seg: int, off: int) -> tuple[list[bytes], int, int]:
    """The reference: the run checked piece by piece (what ``_piece_run`` must equal)."""
    head, parts, q = bytes(buf[p:p + 20]), [], p
    while q < n:
        end = min(q + seg, n)
        if end - q <= wire.PIECE.size or buf[q:q + 20] != head or buf[q + 20:q + 24] != wire.PIECE_OFFSET.pack(off):
            break
        parts.append(bytes(buf[q + wire.PIECE.size:end]))
        off += end - q - wire.PIECE.size
        q = end
    return parts, off, q


@settings(max_examples=150, deadline=None)
@given(st.integers(200, 30000), st.sampled_from([1472, 1448, 1000, 1401]), st.integers(0, 3),
       st.lists(st.tuples(st.integers(0, 60), st.sampled_from(["swap", "seq", "offset", "drop", "dup"])),
                max_size=3))
def test_a_run_checked_column_by_column_is_the_run_checked_piece_by_piece(size: int, seg: int, lead: int,
                                                                          damage: list) -> None:
    """Whole trains, trains with a piece swapped, relabelled, misnumbered, lost or seen twice,
    at any alignment in the buffer: the fast check finds exactly the run the piece-by-piece one does."""
    from weave_fdp.datapath.sleeve.receive import _piece_run
    pieces = wire.split_pieces(PEER, 5, os.urandom(size), seg, sealed=False)
    other = wire.split_pieces(PEER, 6, os.urandom(size), seg, sealed=False)
    for i, how in damage:
        i %= len(pieces)
        if how == "swap" and i + 1 < len(pieces) and len(pieces[i + 1]) == len(pieces[i]):
            pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        elif how == "seq" and len(other[i % len(other)]) == len(pieces[i]):
            pieces[i] = other[i % len(other)]
        elif how == "offset":
            pieces[i] = pieces[i][:20] + wire.PIECE_OFFSET.pack(7) + pieces[i][24:]
        elif how == "drop" and len(pieces) > 1:
            del pieces[i]
        elif how == "dup":
            pieces.insert(i, pieces[i])
    buf = bytearray(bytes(lead) + b"".join(pieces))
    want = _piece_run_one_by_one(buf, lead, len(buf), seg, 0)
    parts, off, q = _piece_run(buf, memoryview(buf), lead, len(buf), seg, 0)
    assert ([bytes(x) for x in parts], off, q) == want
