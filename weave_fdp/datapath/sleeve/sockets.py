"""The two sockets of the sleeve: AF_PACKET on the bridge port (capture/inject) and UDP 6783.

Why these options:
- PACKET_VNET_HDR: we read whole GSO super-frames (up to 64 KiB) with their
  virtio_net_hdr instead of MTU-sized frames, and inject them the same way, so one
  syscall moves tens of packets. The header also carries "checksum not yet
  computed" (offload), which the receiving side hands back to its kernel.
- PACKET_IGNORE_OUTGOING: frames we inject are not captured again.
- PACKET_QDISC_BYPASS: inject straight to the veth, no qdisc.
- UDP_SEGMENT / UDP_GRO: a fragmented super-frame leaves in one sendmsg and may
  arrive in one recvmsg.
- IP_PMTUDISC_DONT on the data socket: DF clear, so a datagram larger than the
  path MTU (a whole GSO super-frame sealed once) is fragmented by the kernel and
  reassembled by the peer's kernel. Used only after a big probe proved that
  fragments pass on that path (see ``pmtu.py``).
- IP_PMTUDISC_PROBE on a second, probe-only socket: DF set, and the kernel's PMTU
  cache does not get in the way of our own probing.
- A TPACKET_V2 receive ring on the capture socket (``CaptureRing``): the kernel copies
  each frame (vnet header included, ``PACKET_RESERVE`` bytes of room before it) into a
  slot of a mapping we share, and the data thread takes frames from there without a
  syscall while they keep coming (it sleeps in ``poll`` only when nothing is left to
  read anywhere). Measured with the null forwarder of ``bench sleeve-bound``: 1.16-1.38x one
  stream through a Python forwarder, 13-19% less CPU per GB, a third fewer context
  switches (in C no gain: the saving is the interpreter's per-call cost). Where the
  kernel refuses a ring the data thread reads with ``recv``. In the sleeve the ring alone
  gave 1.00-1.05x, 1-5% less CPU per GB (docs/SLEEVE.md).
- One data thread reads the capture port and the UDP socket in turn with MSG_DONTWAIT and
  sleeps in one ``poll`` on both (at most ``WAIT_S``) when a round found nothing; every
  send passes MSG_DONTWAIT (a full queue is a counted drop, never a stall). SO_RCVTIMEO
  (``WAIT_S``) still bounds any blocking read made elsewhere (tests, tools).
"""

from __future__ import annotations

import errno
import functools
import mmap
import socket
import struct

from weave_fdp.errors import FdpError, KernelFeatureMissing, NotFound

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_RESERVE = 12
TPACKET_V2 = 1
TP_STATUS_USER = 0x1         # the slot holds a frame for us (else it is the kernel's)
TP_STATUS_COPY = 0x2         # the frame was cut to the slot (a copy went to the socket queue)
TPACKET2_HDRLEN = 52         # struct tpacket2_hdr (aligned) + struct sockaddr_ll, before the reserve
RING_FRAME = 68 << 10        # one slot: a 64 KiB GSO super-frame, its vnet header and the slot's headers
RING_BLOCK = 1 << 20         # the kernel allocates blocks in powers of two: 15 slots in 1 MiB, 0.4% unused
RING_BLOCKS = 8              # 120 slots, 8 MiB per capture socket (the socket buffer it replaces is 8 MiB)
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_PROBE = 3
BUF_BYTES = 8 << 20
SO_NO_CHECK = 11
WAIT_S = 0.2              # longest the data thread sleeps in poll (then it looks at its state)


def _wait_reads(s: socket.socket) -> None:
    """Blocking reads that give up after WAIT_S (EAGAIN): see the module docstring."""
    s.setblocking(True)
    us = int(WAIT_S * 1e6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", us // 1000000, us % 1000000))


def _force_buffers(s: socket.socket) -> None:
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):   # SO_RCVBUFFORCE / SO_SNDBUFFORCE
        try:
            s.setsockopt(socket.SOL_SOCKET, force, BUF_BYTES)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, BUF_BYTES)


def packet_socket(ifname: str, *, vnet: bool = True) -> socket.socket:
    """AF_PACKET socket bound to ``ifname``; reads wait at most WAIT_S, sends never wait."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        raise FdpError(f"cannot open a packet socket on {ifname}: {exc}", fix="run as root") from exc
    try:
        if vnet:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        try:
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        except OSError:
            pass
        _force_buffers(s)
        s.bind((ifname, ETH_P_ALL))
    except OSError as exc:
        s.close()
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            raise NotFound(f"interface {ifname} does not exist", fix="create the sleeve port first") from exc
        if exc.errno == errno.ENOPROTOOPT:
            raise KernelFeatureMissing(f"packet socket option missing on this kernel: {exc}") from exc
        raise FdpError(f"cannot set up packet socket on {ifname}: {exc}") from exc
    _wait_reads(s)
    return s


def probe_socket(bind_ip: str) -> socket.socket:
    """UDP socket (ephemeral port) that sends DF PMTU probes; the peer acks to our port 6783."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        s.bind((bind_ip, 0))
    except OSError as exc:
        s.close()
        raise FdpError(f"cannot open the sleeve's PMTU probe socket on {bind_ip}: {exc}") from exc
    s.setblocking(False)
    return s


def udp_socket(bind_ip: str, port: int, *, gro: bool = True, df: bool = False) -> tuple[socket.socket, bool]:
    """UDP socket for the sleeve; returns (socket, GRO enabled). ``df``: never fragment."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE if df else IP_PMTUDISC_DONT)
        _force_buffers(s)
        s.bind((bind_ip, port))
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            raise FdpError(f"UDP port {port} is in use", fix="is another sleeve or router running on this host?") from exc
        raise FdpError(f"cannot bind UDP {bind_ip}:{port}: {exc}") from exc
    got_gro = False
    if gro:
        try:
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
            got_gro = True
        except OSError:
            pass
    _wait_reads(s)
    return s, got_gro


@functools.lru_cache(maxsize=64)
def gso_cmsg(seg: int) -> tuple[tuple[int, int, bytes], ...]:
    """The UDP_SEGMENT control message for ``seg``-byte datagrams (made once per size)."""
    return ((SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg)),)


def gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """Segment size from a UDP_GRO control message, 0 when absent."""
    for level, typ, data in ancdata:
        if level == SOL_UDP and typ == UDP_GRO and len(data) >= 4:
            return struct.unpack("=i", data[:4])[0]
    return 0


def ring_slots(frame: int, block: int, blocks: int) -> list[int]:
    """Where each slot of a TPACKET ring starts in its mapping: ``block // frame`` slots per
    block, none across a block's end (what the kernel lays out)."""
    per = block // frame
    return [b * block + k * frame for b in range(blocks) for k in range(per)]


_SLOT = struct.Struct("=IIIH")   # tp_status, tp_len, tp_snaplen, tp_mac of struct tpacket2_hdr
_ZERO = struct.Struct("=I")


class CaptureRing:
    """A TPACKET_V2 receive ring on a packet socket: frames in order, each in its own slot of a
    shared mapping, with ``reserve`` free bytes before it and ``tail`` after it (room to build
    a datagram in place).

    ``next`` gives the slot of the next frame (None when it is not there yet: poll the socket), ``frame``
    where the frame lies in ``view``, ``release`` hands the slot back to the kernel. One
    thread only."""

    def __init__(self, s: socket.socket, reserve: int, tail: int = 0, *, frame: int = RING_FRAME,
                 block: int = RING_BLOCK, blocks: int = RING_BLOCKS) -> None:
        per = block // frame
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        s.setsockopt(SOL_PACKET, PACKET_RESERVE, reserve)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", block, blocks, frame, per * blocks))
        self.map = mmap.mmap(s.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        self.frame_size, self.frames = frame, per * blocks
        self._bases = ring_slots(frame, block, blocks)
        self.reserve, self.tail = reserve, tail
        self._i = 0

    @classmethod
    def open(cls, s: socket.socket, reserve: int, tail: int = 0) -> CaptureRing | None:
        """The ring, or None where the kernel refuses one (the caller reads with ``recv``)."""
        try:
            return cls(s, reserve, tail)
        except (OSError, ValueError):
            return None

    def next(self) -> int | None:
        """Offset of the next frame's slot; None when the kernel has not filled it yet (the
        caller polls the socket)."""
        base = self._bases[self._i]
        if not self.map[base] & TP_STATUS_USER:       # the status word's low byte (little-endian)
            return None
        return base

    def frame(self, base: int, vlen: int) -> tuple[int, int] | None:
        """(offset of the frame in ``view``, vnet header included; its length) in the slot at
        ``base``; None when it was cut to the slot or leaves no room to build in place
        (``reserve`` bytes before it, ``tail`` after it)."""
        status, whole, snap, mac = _SLOT.unpack_from(self.map, base)
        start = base + mac - vlen
        if snap < whole or status & TP_STATUS_COPY or start - self.reserve < base + TPACKET2_HDRLEN \
                or start + vlen + snap + self.tail > base + self.frame_size:
            return None
        return start, vlen + snap

    def release(self, base: int) -> None:
        """The slot back to the kernel; the next one is next."""
        _ZERO.pack_into(self.map, base, 0)
        self._i = (self._i + 1) % self.frames

    def close(self) -> None:
        try:
            self.view.release()
            self.map.close()
        except BufferError:      # a view of a slot still alive somewhere: the collector closes it
            pass
