"""The transmit path of the sleeve over fake sockets: a captured GSO super-frame to a
version-2 peer leaves as trains of pieces (sealed in place on sealed links), the
receiver gets it back whole, and the flow it belongs to is counted by its plaintext."""

from __future__ import annotations

import os
import struct

import pytest

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher
from weave_fdp.datapath.sleeve.crypto import aesgcm_available
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.transmit import HEADROOM

A, B = bytes.fromhex("7e0000000001"), bytes.fromhex("7e0000000002")
A_ADDR, B_ADDR = ("192.0.2.1", wire.PORT), ("192.0.2.2", wire.PORT)
SECRET = b"s" * 32
MSS = 1300                 # fits the sealed path's MTU (1399 on a 1500 underlay): no ICMP


class _Sock:
    """Both sockets of a forwarder: what it sends (UDP trains, injected frames)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[bytes], int]] = []     # (datagrams, segment size)
        self.frames: list[bytes] = []

    def sendmsg(self, iov: list, anc: list, *_a: object) -> int:
        data = b"".join(bytes(p) for p in iov)
        seg = struct.unpack("=H", anc[0][2])[0] if anc else len(data)
        self.sent.append(([data[i:i + seg] for i in range(0, len(data), seg)], seg))
        return len(data)

    def send(self, b: bytes, *_a: object) -> int:
        self.frames.append(bytes(b))
        return len(b)

    def setsockopt(self, *_a: object) -> None:
        pass


def _pair(sealed: bool) -> tuple[Forwarder, _Sock, Forwarder, _Sock]:
    out = []
    for local, peer, addr in ((A, B, B_ADDR), (B, A, A_ADDR)):
        fw = Forwarder(local, "unused0", secret_for=(lambda _p: SECRET) if sealed else None)
        fw.set_peers({peer: addr})
        fw.set_routes({peer: peer}, {peer: [], local: [peer]})
        fw._peer_version(fw.links[peer], wire.PIECE_VERSION, wire.FEATURE_AESGCM if fw.aesgcm else 0)
        fw.usock, fw.psock = _Sock(), _Sock()       # type: ignore[assignment]
        out += [fw, fw.usock if local == A else fw.psock]
    return out[0], out[1], out[2], out[3]


def _gso_frame(payload: int, sport: int) -> bytes:
    """vnet header (TCPv4 GSO, MSS) + Ethernet + IPv4 (DF) + TCP + payload: what the capture reads."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 6, 0, bytes([10, 32, 1, 1]), bytes([10, 32, 2, 1]))
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, 1, 1, 5 << 4, 0x10, 512, 0, 0)
    eth = bytes.fromhex("0a0000000002") + bytes.fromhex("0a0000000001") + b"\x08\x00"
    vnet = fr.VNET.pack(1, 1, 54, MSS, 34, 16)
    return vnet + eth + ip + tcp + os.urandom(payload)


def _capture(fw: Forwarder, frame: bytes) -> None:
    """One captured frame, in the capture buffer at HEADROOM as the capture loop reads it."""
    buf = bytearray(HEADROOM + len(frame) + 16)
    buf[HEADROOM:HEADROOM + len(frame)] = frame
    fw._outbound(memoryview(buf), len(frame), wire.VNET_LEN, Batcher(), 1.0)


@pytest.mark.parametrize("sealed", [False, True])
def test_a_super_frame_leaves_in_pieces_and_arrives_whole_counted_as_one_flow(sealed: bool) -> None:
    tx, tx_sock, rx, rx_sock = _pair(sealed)
    frames = [_gso_frame(60000, 40000), _gso_frame(60000, 40000), _gso_frame(30000, 40001)]
    for f in frames:
        _capture(tx, f)
    assert tx.psock.frames == []         # type: ignore[union-attr]  # no ICMP "too big"
    assert all(d[0] == wire.PIECE_VERSION for dgs, _ in tx_sock.sent for d in dgs)
    assert all(bool(d[1] & wire.FLAG_SEALED) == sealed for dgs, _ in tx_sock.sent for d in dgs)
    for dgs, seg in tx_sock.sent:
        buf = bytearray(b"".join(dgs))
        rx._rx_pieces(buf, memoryview(buf), 0, len(buf), seg, A_ADDR, Batcher())
    assert rx_sock.frames == frames and rx.drops.snapshot() == {}
    # Sealed frames are encrypted where they were captured: the flow is keyed before that.
    flows = tx.datapath_report()["flows"]
    assert sorted((f["sport"], f["dport"], f["packets"]) for f in flows) == [(40000, 5201, 2), (40001, 5201, 1)]
    assert all(f["src_ip"] == "10.32.1.1" and f["dir"] == "tx" for f in flows)


@pytest.mark.skipif(not aesgcm_available(), reason="libsodium has no AES-256-GCM on this CPU")
def test_sealed_pieces_use_aes_gcm_when_both_ends_have_it() -> None:
    tx, tx_sock, _rx, _ = _pair(True)
    _capture(tx, _gso_frame(20000, 40000))
    assert all(d[1] == wire.FLAG_SEALED | wire.FLAG_AESGCM for dgs, _ in tx_sock.sent for d in dgs)
