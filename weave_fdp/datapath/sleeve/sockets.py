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
- Blocking reads with SO_RCVTIMEO (``WAIT_S``) on the capture and data sockets: a
  forwarder thread sleeps in its first read of a burst and reads the rest with
  MSG_DONTWAIT, so a burst costs no poll() and no failed read; every send passes
  MSG_DONTWAIT (a full queue is a counted drop, never a stall).
"""

from __future__ import annotations

import errno
import socket
import struct

from weave_fdp.errors import FdpError, KernelFeatureMissing, NotFound

SOL_PACKET = 263
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
WAIT_S = 0.2              # longest a forwarder thread sleeps in a read (then it looks at its state)


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


def gso_cmsg(seg: int) -> list[tuple[int, int, bytes]]:
    return [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))]


def gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """Segment size from a UDP_GRO control message, 0 when absent."""
    for level, typ, data in ancdata:
        if level == SOL_UDP and typ == UDP_GRO and len(data) >= 4:
            return struct.unpack("=i", data[:4])[0]
    return 0
