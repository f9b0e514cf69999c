"""Frames over 64 KiB (IPv4 BIG TCP super-frames) in the sleeve, without the kernel: the
E_BIG entry, the FEATURE_BIG heartbeat bit, and a captured super-frame carried whole to
a peer that takes it or cut into train-sized super-frames for one that does not (the
real send and receive paths over in-memory sockets)."""

from __future__ import annotations

import struct
import time

import pytest

from weave_fdp.bench.sleeve_python import (ADDR, MAC_A, MAC_B, A, B, KeepSocket, forwarder,
                                           tcp_frame)
from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher
from weave_fdp.datapath.sleeve.drops import SleeveDrop
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.receive import RECV_MAX
from weave_fdp.datapath.sleeve.sizing import big_super_frame, one_train_frame
from weave_fdp.datapath.sleeve.transmit import CAPTURE_MAX, HEADROOM, TAILROOM
from weave_fdp.datapath.sleeve.views import StridedViews
from weave_fdp.errors import ProtocolError

SRC, DST = bytes(range(6)), bytes(range(6, 12))


def body(flags: int, n: int, field: int | None = None) -> memoryview:
    frame = bytes(fr.VNET.size) + bytes(n - fr.VNET.size)
    return memoryview(wire.ENTRY.pack(SRC, DST, flags, 16, (n if field is None else field) & 0xFFFF) + frame)


def test_a_big_entry_runs_to_the_end_of_its_body() -> None:
    (e,) = wire.iter_entries(body(wire.E_VNET | wire.E_BIG, 200_000))
    assert len(e.payload) == 200_000 and e.flags == wire.E_VNET | wire.E_BIG
    assert wire.encode_entry(SRC, DST, bytes(70_000), flags=wire.E_BIG)[-2:] == struct.pack("!H", 70_000 & 0xFFFF)


@pytest.mark.parametrize(("flags", "n", "field", "cause"), [
    (wire.E_VNET | wire.E_BIG, 200_000, 200_001, SleeveDrop.BAD_LENGTH),    # len disagrees with the rest
    (wire.E_VNET | wire.E_BIG, 60_000, None, SleeveDrop.BAD_LENGTH),        # not over 64 KiB
    (wire.E_BIG | wire.E_FRAG, 200_000, None, SleeveDrop.BAD_FLAGS),
])
def test_a_bad_big_entry_is_refused_with_its_cause(flags: int, n: int, field: int | None, cause: SleeveDrop) -> None:
    with pytest.raises(wire.WireError) as exc:
        list(wire.iter_entries(body(flags, n, field)))
    assert exc.value.cause == cause


def test_an_entry_over_64k_needs_the_big_flag() -> None:
    with pytest.raises(ProtocolError):
        wire.encode_entry(SRC, DST, bytes(70_000))


def test_heartbeats_say_feature_big_only_when_this_host_takes_big_frames() -> None:
    fw = forwarder(A, B, False)
    assert not fw._features() & wire.FEATURE_BIG
    fw.big_frames = True
    assert fw._features() & wire.FEATURE_BIG
    fw.pieces = False
    assert fw._features() == 0
    link = fw.links[B]
    fw._peer_version(link, wire.PIECE_VERSION, wire.FEATURE_BIG)
    assert not link.takes_big, "no pieces spoken here: nothing goes whole over 64 KiB"
    fw.pieces = True
    fw._peer_version(link, wire.PIECE_VERSION, wire.FEATURE_BIG)
    assert link.takes_big
    fw._peer_version(link, wire.PIECE_VERSION, 0)
    assert not link.takes_big


class AllSocket(KeepSocket):
    """Keeps every train sent (bytes, segment size) and every frame injected (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.trains: list[tuple[bytes, int]] = []
        self.frames: list[bytes] = []

    def sendmsg(self, iov: list, anc: object = (), _flags: int = 0, to: object = None) -> int:
        n = super().sendmsg(iov, anc, _flags, to)
        data = b"".join(bytes(p) for p in iov)
        if to is None:
            self.frames.append(data)
        else:
            self.trains.append((data, self.seg or len(data)))
        return n

    def send(self, b: object, *_a: object) -> int:
        self.frames.append(bytes(b))            # type: ignore[call-overload]
        return super().send(b)


def carry(takes_big: bool, frame: bytes) -> tuple[Forwarder, Forwarder]:
    """Capture ``frame`` on A and hand every datagram A sent to B, one by one."""
    tx, rx = forwarder(A, B, False), forwarder(B, A, False)
    tx.usock = tx.psock = AllSocket()           # type: ignore[assignment]
    rx.usock = rx.psock = AllSocket()           # type: ignore[assignment]
    tx.macs[MAC_B] = (B, time.monotonic())
    tx.links[B].takes_big = takes_big
    rx.big_frames = takes_big
    cap = bytearray(HEADROOM + CAPTURE_MAX + TAILROOM)
    cap[HEADROOM:HEADROOM + len(frame)] = frame
    b = Batcher()
    tx._outbound(memoryview(cap), len(frame), wire.VNET_LEN, b, 1.0)
    tx._flush(b)
    rbuf = bytearray(RECV_MAX)                  # each train read whole, as with UDP GRO
    rmv = memoryview(rbuf)
    rx._rx_views = StridedViews(rmv, RECV_MAX)
    for data, seg in tx.usock.trains:          # type: ignore[union-attr]
        n = len(data)
        rbuf[:n] = data
        if data[0] == wire.PIECE_VERSION:
            if not (seg < n and rx._rx_train(rbuf, rmv, n, seg, ADDR[A], Batcher())):
                rx._rx_pieces(rbuf, rmv, 0, n, seg, ADDR[A], Batcher())
        else:
            for o in range(0, n, seg):
                rx._datagram(rmv[o:min(n, o + seg)], ADDR[A], Batcher())
    return tx, rx


def test_a_big_super_frame_crosses_whole_to_a_peer_that_takes_it() -> None:
    frame = tcp_frame(200_000, MAC_A, MAC_B)
    tx, rx = carry(True, frame)
    assert tx.stats["big_tx"] == 1 and tx.stats["cut_big"] == 0
    assert rx.psock.frames == [frame]           # type: ignore[union-attr]
    assert not tx.drops.snapshot() and not rx.drops.snapshot()


def test_a_big_super_frame_is_cut_for_a_peer_that_takes_none() -> None:
    frame = tcp_frame(200_000, MAC_A, MAC_B)
    tx, rx = carry(False, frame)
    got = rx.psock.frames                       # type: ignore[union-attr]
    assert tx.stats["cut_big"] == 1 and tx.stats["big_tx"] == 0
    limit = one_train_frame(tx.links[B].prober.payload)
    assert len(got) == -(-200_000 // ((limit - 54) // 1300 * 1300))
    assert all(len(f) - wire.VNET_LEN <= limit for f in got)
    head = wire.VNET_LEN + 54
    assert b"".join(f[head:] for f in got) == frame[head:]
    assert not tx.drops.snapshot() and not rx.drops.snapshot()


def test_a_big_frame_that_cannot_be_cut_is_dropped_with_its_reason() -> None:
    frame = bytearray(tcp_frame(200_000, MAC_A, MAC_B))
    frame[wire.VNET_LEN + 23] = 17               # "UDP": no TCP super-frame to cut
    tx, rx = carry(False, bytes(frame))
    assert tx.drops.snapshot() == {SleeveDrop.BIG_UNSPLIT.value: 1}
    assert rx.psock.frames == []                 # type: ignore[union-attr]


def test_a_relayed_big_entry_leaves_cut() -> None:
    tx = forwarder(A, B, False)
    tx.usock = tx.psock = AllSocket()            # type: ignore[assignment]
    frame = tcp_frame(150_000, MAC_A, MAC_B)
    assert tx._to_link(tx.links[B], A, B, wire.E_VNET | wire.E_BIG, frame, Batcher(), 15, origin=False)
    assert tx.stats["cut_big"] == 1
    assert tx.usock.trains                      # type: ignore[union-attr]


def test_big_super_frames_are_four_trains_of_pieces() -> None:
    assert big_super_frame(1500) == 4 * 44 * 1448 - 43
    assert one_train_frame(1472) * 4 < big_super_frame(1500) <= CAPTURE_MAX - wire.VNET_LEN
