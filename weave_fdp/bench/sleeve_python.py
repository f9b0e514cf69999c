"""Python per frame in the sleeve's hot paths, without the kernel: what the interpreter costs.

    python -m weave_fdp.bench.sleeve_python [--password] [--n 3000]

Two forwarders (host A sends, host B receives) wired to in-memory sockets that keep
what they are given: a 64 KiB TCP super-frame captured and sent as a train of pieces,
the train received as one GRO read and injected, a TCP ACK captured and flushed, the
ACK's datagram received and injected; each timed over ``n`` runs (thread CPU time,
best of five slices, so the machine's noise counts as little as it can) and printed in
µs, beside the null forwarder's send of the same super-frame (``bench/null_forwarder.py``,
the floor for any Python forwarder of this shape). The paths are the real ones
(``Transmit._outbound`` with its route cache and piece views, ``Receive._rx_train``,
``_fast_single``); only the sockets are fakes. See docs/SLEEVE.md.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Callable

from weave_fdp.bench import null_forwarder as nf
from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.receive import RECV_MAX
from weave_fdp.datapath.sleeve.transmit import CAPTURE_MAX, HEADROOM, TAILROOM
from weave_fdp.datapath.sleeve.views import StridedViews

A, B = bytes.fromhex("7e00000000a1"), bytes.fromhex("7e00000000b2")
ADDR = {A: ("192.0.2.1", wire.PORT), B: ("192.0.2.2", wire.PORT)}
MAC_A, MAC_B = bytes.fromhex("0a00000000a1"), bytes.fromhex("0a00000000b2")
SECRET = b"weave-fdp sleeve_python secret!!"
MSS = 1300


class KeepSocket:
    """Both sockets of a forwarder: keeps the last datagram or train sent (its iovecs and
    segment size) and counts frames injected."""

    def __init__(self) -> None:
        self.iov: list = []
        self.seg = 0
        self.injected = 0

    def sendmsg(self, iov: list, anc: object = (), _flags: int = 0, to: object = None) -> int:
        if to is None:
            self.injected += 1
        else:
            self.iov = iov
            cm = list(anc) if anc else []          # type: ignore[call-overload]
            self.seg = struct.unpack("=H", cm[0][2])[0] if cm else 0
        return 1000

    def send(self, _b: object, *_a: object) -> int:
        self.injected += 1
        return 1000

    def setsockopt(self, *_a: object) -> None:
        pass

    def wire(self) -> bytes:
        return b"".join(bytes(p) for p in self.iov)


def tcp_frame(payload: int, src: bytes, dst: bytes) -> bytes:
    """vnet header + Ethernet + IPv4 (DF) + TCP + ``payload`` bytes (a GSO super-frame when big)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 6, 0, bytes([10, 32, 1, 1]), bytes([10, 32, 2, 1]))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 5 << 4, 0x10, 512, 0, 0)
    vnet = fr.VNET.pack(1, 1, 54, MSS, 34, 16) if payload > MSS else fr.VNET_ZERO
    return vnet + dst + src + b"\x08\x00" + ip + tcp + os.urandom(payload)


def forwarder(local: bytes, peer: bytes, sealed: bool) -> Forwarder:
    fw = Forwarder(local, "unused0", secret_for=(lambda _p: SECRET) if sealed else None)
    fw.set_peers({peer: ADDR[peer]})
    fw.set_routes({peer: peer}, {local: [peer], peer: []})
    fw._peer_version(fw.links[peer], wire.PIECE_VERSION, wire.FEATURE_AESGCM if fw.aesgcm else 0)
    fw.links[peer].last_rx = fw.links[peer].up_since = time.monotonic()
    fw.usock = fw.psock = KeepSocket()       # type: ignore[assignment]
    return fw


def best_us(fn: Callable[[], object], n: int) -> float:
    """Thread CPU µs per call of ``fn``: the best of five slices of ``n // 5`` calls."""
    for _ in range(min(200, n)):
        fn()
    k = max(1, n // 5)
    best = float("inf")
    for _ in range(5):
        t = time.thread_time()
        for _ in range(k):
            fn()
        best = min(best, (time.thread_time() - t) / k * 1e6)
    return best


def measure(*, sealed: bool, n: int) -> dict[str, float]:
    """µs per call: ``send_super`` (capture → train sent), ``receive_super`` (GRO read of the
    train → injected), ``send_ack``, ``receive_ack``, ``null_send_super``."""
    tx, rx = forwarder(A, B, sealed), forwarder(B, A, sealed)
    tx.macs[MAC_B] = (B, time.monotonic())
    rx.macs[MAC_A] = (A, time.monotonic())
    cap = bytearray(HEADROOM + CAPTURE_MAX + TAILROOM)
    cmv = memoryview(cap)
    for fw in (tx, rx):
        fw._views = StridedViews(cmv, CAPTURE_MAX + TAILROOM)
    rbuf = bytearray(RECV_MAX)
    rmv = memoryview(rbuf)
    rx._rx_views = tx._rx_views = StridedViews(rmv, RECV_MAX)
    big = tcp_frame(63000, MAC_A, MAC_B)
    ack = tcp_frame(0, MAC_B, MAC_A)

    def capture(fw: Forwarder, frame: bytes) -> None:
        cap[HEADROOM:HEADROOM + len(frame)] = frame
        b = Batcher()
        fw._outbound(cmv, len(frame), wire.VNET_LEN, b, 1.0)
        fw._flush(b)

    out: dict[str, float] = {}
    copy = best_us(lambda: cap.__setitem__(slice(HEADROOM, HEADROOM + len(big)), big), n)
    out["send_super"] = max(0.0, best_us(lambda: capture(tx, big), n) - copy)
    trains = []                              # sealed trains are opened once each (replay window)
    for _ in range(n + 200 if sealed else 1):
        capture(tx, big)
        trains.append(tx.usock.wire())       # type: ignore[union-attr]
    seg = tx.usock.seg                       # type: ignore[union-attr]
    it = iter(trains)
    one = trains[0]

    def receive(data: bytes) -> None:
        rbuf[:len(data)] = data
        if not rx._rx_train(rbuf, rmv, len(data), seg, ADDR[A], Batcher()):
            raise RuntimeError("the whole train did not take the steady receive path")

    out["receive_super"] = max(0.0, best_us(lambda: receive(next(it) if sealed else one), n)
                               - best_us(lambda: rbuf.__setitem__(slice(0, len(one)), one), n))
    out["send_ack"] = best_us(lambda: capture(rx, ack), n)
    acks = []
    for _ in range(n + 200 if sealed else 1):
        capture(rx, ack)
        acks.append(rx.usock.wire())         # type: ignore[union-attr]
    ait = iter(acks)

    def receive_ack(data: bytes) -> None:
        rbuf[:len(data)] = data
        if not tx._fast_single(rbuf, rmv, 0, len(data), ADDR[B]):
            tx._datagram(rmv[:len(data)], ADDR[B], Batcher())

    out["receive_ack"] = best_us(lambda: receive_ack(next(ait) if sealed else acks[0]), n)
    sender = nf.Sender(KeepSocket(), ADDR[B], seg or 1472)         # type: ignore[arg-type]
    nbuf = bytearray(big)
    nmv = memoryview(nbuf)
    out["null_send_super"] = best_us(lambda: sender.send(nmv, len(big)), n)
    drops = {**tx.drops.snapshot(), **rx.drops.snapshot()}
    if drops or rx.psock.injected == 0 or tx.psock.injected == 0:      # type: ignore[union-attr]
        raise RuntimeError(f"frames lost on the way: drops {drops}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--password", action="store_true", help="sealed links (AES-256-GCM pieces where available)")
    ap.add_argument("--n", type=int, default=3000, help="calls per measurement")
    a = ap.parse_args(argv)
    if not 10 <= a.n <= 1_000_000:
        print("error: --n out of range; use 10..1000000", file=sys.stderr)
        return 2
    r = measure(sealed=a.password, n=a.n)
    print(f"sleeve {'sealed' if a.password else 'plain'}, µs of Python per call (thread CPU, best of 5):")
    for k, v in r.items():
        print(f"  {k:16s} {v:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
