"""A null forwarder: what any userspace overlay forwarder must do, and nothing else.

A measuring stick for ``bench sleeve-bound`` (not product code): the same sockets
and options as the sleeve (``sleeve/sockets.py``: AF_PACKET with PACKET_VNET_HDR on
``vethwe-pcap``, UDP 6783 with UDP_GRO, 8 MiB buffers, blocking reads, sends with
MSG_DONTWAIT), and per frame only:

* capture: one ``recv`` of a frame (vnet header + GSO super-frame) → one ``sendmsg``
  to the one peer: a single datagram when it fits the path, else a UDP_SEGMENT train
  of pieces, each ``[total, offset]`` + a chunk of the frame (iovecs into the capture
  buffer, no copy);
* receive: one ``recvmsg`` (a UDP GRO batch) → the chunks of a whole train joined
  by one ``sendmsg`` into the packet socket (iovecs into the receive buffer: the kernel
  joins them); anything else (ACKs coalesced by GRO, a train split across reads) piece
  by piece.

No routing, no crypto, no counters, no checks beyond what keeps frames whole. Both
directions (data and ACKs). ``--procs``: capture and receive in two processes (forked,
sharing the sockets; no GIL between them) instead of two threads of one. ``--spin-us``:
a read that finds nothing keeps trying (MSG_DONTWAIT) that long before it sleeps.
``--ring``: capture from a TPACKET_V2 receive ring (two threads). ``--aesgcm LOCAL REMOTE``: every frame sealed once with AES-256-GCM by the sleeve's own
``Sealer`` and opened by its ``Opener`` (the encrypted sleeve's cipher, nothing else of it).

    python -m weave_fdp.bench.null_forwarder --ifname vethwe-pcap --peer 10.x.y.z [--procs] [--spin-us 50]

The wire (``HEAD``, 8 bytes, then the chunk)::

    total(4) offset(4)    total: bytes of the whole frame (vnet header included)

The framing helpers (``train_layout``, ``whole_train``, ``split``/``join``) are pure and
tested; ``null_forwarder.c`` speaks the same wire.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import math
import mmap
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from weave_fdp.datapath.sleeve import sockets as so
from weave_fdp.datapath.sleeve.sockets import SOL_PACKET
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.crypto import GCM_TAG, Opener, Sealer, aesgcm_available
from weave_fdp.datapath.sleeve.sizing import segments_per_train
from weave_fdp.errors import ProtocolError

HEAD = struct.Struct("!II")       # total, offset
SEQ = struct.Struct("!Q")         # sealed (--aesgcm): the nonce's sequence number before the ciphertext
SECRET = b"weave-fdp null forwarder"
PORT = wire.PORT
CAPTURE_MAX = 70000
RECV_MAX = 65536 + 4096
PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def train_layout(total: int, seg: int) -> list[tuple[int, int]]:
    """How a ``total``-byte frame leaves on a path of ``seg``-byte datagrams: one
    (first offset, pieces) per ``sendmsg``; every piece but a frame's last carries
    ``seg − HEAD.size`` bytes of it. A frame that fits one datagram: [(0, 1)]."""
    chunk = seg - HEAD.size
    step = chunk * segments_per_train(seg)
    return [(first, math.ceil(min(step, total - first) / chunk)) for first in range(0, max(total, 1), step)]


def whole_train(n: int, seg: int, total: int, offset: int) -> bool:
    """A read of ``n`` bytes in ``seg``-byte segments is exactly one whole frame's train
    (its first piece says ``total``, ``offset``): join it in one go."""
    chunk = seg - HEAD.size
    return offset == 0 and chunk > 0 and n == total + HEAD.size * math.ceil(total / chunk)


def split(frame: bytes, seg: int) -> list[bytes]:
    """The datagrams of ``frame`` (what the capture side sends, as bytes; for tests)."""
    chunk = seg - HEAD.size
    total = len(frame)
    return [HEAD.pack(total, o) + frame[o:o + chunk] for o in range(0, max(total, 1), chunk)]


class Joiner:
    """Frames back from datagrams arriving in order, piece by piece (the slow path; one
    frame in flight, as a train is sent whole)."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.want = 0
        self.total = 0

    def add(self, dg: bytes | memoryview) -> bytes | memoryview | None:
        """One datagram; the whole frame once its last piece is in, else None."""
        if len(dg) < HEAD.size:
            return None
        total, off = HEAD.unpack_from(dg)
        body = dg[HEAD.size:]
        if off == 0:
            if len(body) >= total:
                self.parts = []
                return body[:total]
            self.parts, self.want, self.total = [], 0, total
        if off != self.want or total != self.total or not self.parts and off:
            self.parts, self.want = [], 0          # a piece out of order: drop the frame
            return None
        self.parts.append(bytes(body))
        self.want += len(body)
        if self.want >= total:
            frame = b"".join(self.parts)[:total]
            self.parts, self.want = [], 0
            return frame
        return None


def train_chunks(mv: memoryview, n: int, seg: int) -> list[memoryview]:
    """The chunks of the ``seg``-byte pieces in ``mv[:n]``, in order: the frame as iovecs,
    joined by the kernel as it copies them into the skb it injects. (Joined in Python
    instead, a fresh 64 KiB object per frame: in a thread other than the main one glibc
    takes it from a per-thread arena that it trims again on free, so every frame paid
    page faults and a TLB shootdown, an IPI to the other CPU; measured, a third of the
    receiving thread's CPU.)"""
    h = HEAD.size
    return [mv[q + h:q + seg] for q in range(0, n, seg)]


# ---------------------------------------------------------------- the loops

def spinning(recv: Callable[[int], T], spin_s: float) -> Callable[[], T]:
    """``recv(flags)`` as a read that, when nothing is there, keeps trying without waiting
    for ``spin_s`` before it sleeps in a blocking read."""
    dontwait = socket.MSG_DONTWAIT
    clock = time.perf_counter

    def read() -> T:
        try:
            return recv(dontwait)
        except BlockingIOError:
            pass
        until = clock() + spin_s
        while clock() < until:
            try:
                return recv(dontwait)
            except BlockingIOError:
                continue
        return recv(0)
    return read


class Sender:
    """Frames (or sealed logical datagrams) to the peer: one datagram, or UDP GSO trains."""

    def __init__(self, usock: socket.socket, peer: tuple[str, int], seg: int) -> None:
        self.usock, self.peer, self.seg = usock, peer, seg
        self.chunk = seg - HEAD.size
        self.per = segments_per_train(seg)
        self.offs: dict[tuple[int, int], list[bytes]] = {}
        self.gso = so.gso_cmsg(seg)

    def send(self, mv: memoryview, n: int) -> None:
        """``mv[:n]`` to the peer (a full queue or a refused send loses it, as in any forwarder)."""
        chunk, dontwait = self.chunk, socket.MSG_DONTWAIT
        try:
            if n <= chunk:
                self.usock.sendmsg([HEAD.pack(n, 0), mv[:n]], [], dontwait, self.peer)
                return
            tot = struct.pack("!I", n)
            per = self.per
            for first in range(0, n, chunk * per):
                k = min(per, -(-(n - first) // chunk))
                offs = self.offs.get((first, k))
                if offs is None:
                    offs = self.offs[(first, k)] = [struct.pack("!I", first + i * chunk) for i in range(k)]
                iov: list = [tot] * (3 * k)
                iov[1::3] = offs
                iov[2::3] = [mv[o:o + chunk] for o in range(first, min(n, first + k * chunk), chunk)]
                self.usock.sendmsg(iov, self.gso if k > 1 else [], dontwait, self.peer)
        except OSError:
            pass


def capture_loop(psock: socket.socket, usock: socket.socket, peer: tuple[str, int], seg: int,
                 spin_s: float = 0.0, sealer: Sealer | None = None) -> None:
    """Frames from the packet socket to the peer; with ``sealer``, each sealed once with
    AES-256-GCM where it was captured (``SEQ`` ‖ ciphertext ‖ tag, as the sleeve seals pieces)."""
    pre = SEQ.size if sealer else 0
    buf = bytearray(pre + CAPTURE_MAX + GCM_TAG)
    mv = memoryview(buf)
    rmv = mv[pre:pre + CAPTURE_MAX]
    read = spinning(lambda flags: psock.recv_into(rmv, 0, flags), spin_s) if spin_s > 0 \
        else functools.partial(psock.recv_into, rmv)
    send = Sender(usock, peer, seg).send
    while True:
        try:
            n = read()
        except (BlockingIOError, InterruptedError):
            continue
        if sealer is None:
            send(mv, n)
            continue
        seq, _ = sealer.seal_gcm_inplace(mv, pre, pre + n)
        SEQ.pack_into(buf, 0, seq)
        send(mv, pre + n + GCM_TAG)


RING_FRAME = 1 << 17              # one ring slot: a 64 KiB super-frame, its vnet and tpacket headers
RING_FRAMES = 64                  # 8 MiB, the packet socket's buffer elsewhere
PACKET_VERSION, PACKET_RX_RING, TPACKET_V2, TP_STATUS_USER = 10, 5, 1, 1
TPACKET2 = struct.Struct("IIIHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net (of tpacket2_hdr)


def ring_capture_loop(psock: socket.socket, usock: socket.socket, peer: tuple[str, int], seg: int) -> None:
    """``capture_loop`` reading a TPACKET_V2 receive ring instead of calling ``recv``: the
    kernel copies each frame (the vnet header just before its MAC header) into a slot of a
    shared mapping, the loop sends it from there and hands the slot back; it sleeps in
    ``poll`` only when the next slot is empty."""
    psock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    psock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", RING_FRAME, RING_FRAMES, RING_FRAME, RING_FRAMES))
    ring = mmap.mmap(psock.fileno(), RING_FRAME * RING_FRAMES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mv = memoryview(ring)
    send = Sender(usock, peer, seg).send
    head, zero = TPACKET2.unpack_from, struct.Struct("I").pack_into
    p = select.poll()
    p.register(psock.fileno(), select.POLLIN | select.POLLERR)
    vlen = wire.VNET_LEN
    i = 0
    while True:
        base = i * RING_FRAME
        status, _len, snap, mac, _net = head(ring, base)
        if not status & TP_STATUS_USER:
            p.poll()
            continue
        start = base + mac - vlen
        send(mv[start:start + snap + vlen], snap + vlen)
        zero(ring, base, 0)                        # the slot back to the kernel
        i = (i + 1) % RING_FRAMES


def receive_loop(usock: socket.socket, psock: socket.socket, spin_s: float = 0.0,
                 opener: Opener | None = None) -> None:
    """Datagrams from the peer to the packet socket; with ``opener``, each frame opened
    (joined first: the cipher needs it in one piece) before it is injected."""
    buf = bytearray(RECV_MAX)
    mv = memoryview(buf)
    anc = socket.CMSG_SPACE(4)
    read = spinning(lambda flags: usock.recvmsg_into([buf], anc, flags), spin_s) if spin_s > 0 \
        else functools.partial(usock.recvmsg_into, [buf], anc)
    joiner = Joiner()
    dontwait = socket.MSG_DONTWAIT
    h = HEAD.size

    def inject(frame: memoryview | bytes) -> None:
        if opener is None:
            psock.send(frame, dontwait)
            return
        box = memoryview(frame if isinstance(frame, memoryview) and not frame.readonly else bytearray(frame))
        try:
            body = opener.open_gcm_box(box[SEQ.size:], SEQ.unpack_from(box)[0])
        except ProtocolError:
            return
        psock.send(body, dontwait)

    while True:
        try:
            n, ancdata, _flags, _addr = read()
        except (BlockingIOError, InterruptedError):
            continue
        if n < h:
            continue
        seg = so.gro_size(ancdata) or n
        try:
            total, off = HEAD.unpack_from(buf)
            if seg >= n:                                   # one datagram
                if off == 0 and n - h >= total:
                    inject(mv[h:h + total])
                    continue
            elif whole_train(n, seg, total, off):           # one whole train: the bulk path
                if opener is None:
                    psock.sendmsg(train_chunks(mv, n, seg), [], dontwait)
                else:
                    inject(memoryview(bytearray().join(train_chunks(mv, n, seg))))
                continue
            for q in range(0, n, seg):                     # ACKs coalesced by GRO, a split train
                frame = joiner.add(mv[q:min(n, q + seg)])
                if frame is not None:
                    inject(frame)
        except OSError:
            pass


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--ifname", default="vethwe-pcap")
    ap.add_argument("--peer", required=True, help="the other host's underlay address")
    ap.add_argument("--seg", type=int, default=1500 - wire.IP_UDP_OVERHEAD, help="UDP payload per datagram")
    ap.add_argument("--procs", action="store_true", help="capture and receive in two processes")
    ap.add_argument("--aesgcm", nargs=2, metavar=("LOCAL", "REMOTE"),
                    help="seal every frame with AES-256-GCM (the sleeve's Sealer/Opener) between these "
                         "6-character peer names")
    ap.add_argument("--ring", action="store_true", help="capture from a TPACKET_V2 receive ring")
    ap.add_argument("--spin-us", type=float, default=0.0,
                    help="when a read finds nothing, keep trying this long before sleeping")
    a = ap.parse_args(argv)
    psock = so.packet_socket(a.ifname)
    usock, gro = so.udp_socket("0.0.0.0", PORT)
    if not gro:
        print("error: UDP_GRO refused by this kernel; the null forwarder needs it", file=sys.stderr)
        return 2
    for s in (psock, usock):                # no SO_RCVTIMEO wake-ups: nothing to look at between reads
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
    peer = (a.peer, PORT)
    spin = a.spin_us / 1e6
    sealer = opener = None
    if a.aesgcm:
        if not aesgcm_available():
            print("error: AES-256-GCM is not available here (libsodium without AES-NI)", file=sys.stderr)
            return 2
        local, remote = (x.encode()[:6].ljust(6, b"-") for x in a.aesgcm)
        sealer, opener = Sealer(SECRET, local, remote), Opener(SECRET, local, remote)
    if a.procs:
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            receive_loop(usock, psock, spin, opener)
            os._exit(0)
        signal.signal(signal.SIGTERM, lambda *_: (os.kill(pid, signal.SIGTERM), os._exit(0)))
        capture_loop(psock, usock, peer, a.seg, spin, sealer)
        return 0
    if a.ring:
        threading.Thread(target=receive_loop, args=(usock, psock), name="null-receive", daemon=True).start()
        ring_capture_loop(psock, usock, peer, a.seg)
        return 0
    threading.Thread(target=receive_loop, args=(usock, psock, spin, opener), name="null-receive",
                     daemon=True).start()
    capture_loop(psock, usock, peer, a.seg, spin, sealer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
