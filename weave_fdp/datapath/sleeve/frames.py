"""Ethernet frame helpers for the sleeve: virtio_net_hdr, GSO segment sizes, ICMP
"fragmentation needed" / "packet too big" replies. Pure.
"""

from __future__ import annotations

import struct

VNET = struct.Struct("=BBHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (host order)
VNET_ZERO = bytes(VNET.size)
GSO_NONE = 0
GSO_ECN = 0x80

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100


def is_multicast(mac: bytes | memoryview) -> bool:
    """Broadcast and multicast destination MACs have the group bit set."""
    return bool(mac[0] & 1)


def l3_offset(frame: bytes | memoryview) -> tuple[int, int]:
    """(ethertype, offset of the L3 header), skipping one VLAN tag."""
    if len(frame) < 14:
        return 0, 14
    et = (frame[12] << 8) | frame[13]
    if et == ETH_P_8021Q and len(frame) >= 18:
        return (frame[16] << 8) | frame[17], 18
    return et, 14


def headers_len(frame: bytes | memoryview) -> int | None:
    """Length of Ethernet+IP+TCP/UDP headers of ``frame``, or None if not parseable."""
    et, l3 = l3_offset(frame)
    if et == ETH_P_IP and len(frame) >= l3 + 20:
        l4 = l3 + (frame[l3] & 0x0F) * 4
        proto = frame[l3 + 9]
    elif et == ETH_P_IPV6 and len(frame) >= l3 + 40:
        l4 = l3 + 40
        proto = frame[l3 + 6]
    else:
        return None
    if proto == 6 and len(frame) >= l4 + 13:
        return l4 + (frame[l4 + 12] >> 4) * 4
    if proto == 17:
        return l4 + 8
    return None


def wire_segment_len(vnet: bytes | memoryview, frame: bytes | memoryview) -> int:
    """Largest Ethernet frame the kernel will cut this (possibly GSO) frame into."""
    _flags, gso_type, _hdr_len, gso_size, _cs, _co = VNET.unpack_from(vnet, 0)
    if gso_type & ~GSO_ECN == GSO_NONE or gso_size == 0:
        return len(frame)
    n = len(frame)
    if n >= 54 and frame[12] == 8 and frame[13] == 0 and frame[23] == 6:   # IPv4/TCP, the bulk case:
        l4 = 14 + (frame[14] & 0x0F) * 4                                    # headers_len in one go
        if n >= l4 + 13:
            return min(n, l4 + (frame[l4 + 12] >> 4) * 4 + gso_size)
    hl = headers_len(frame)
    if hl is None:
        return len(frame)
    return min(len(frame), hl + gso_size)


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def too_big_reply(frame: bytes | memoryview, mtu: int) -> bytes | None:
    """An ICMP reply telling the sender of ``frame`` that ``mtu`` (L3 bytes) fits.

    IPv4 with DF -> ICMP type 3 code 4; IPv6 -> ICMPv6 Packet Too Big. None when
    the frame may be fragmented or is not IP (the caller fragments it instead).
    The reply comes "from" the original destination, so the sender's stack
    matches it to its socket and lowers its path MTU.
    """
    frame = bytes(frame)
    et, l3 = l3_offset(frame)
    eth = frame[6:12] + frame[0:6] + frame[12:l3]
    if et == ETH_P_IP and len(frame) >= l3 + 20:
        ihl = (frame[l3] & 0x0F) * 4
        if not frame[l3 + 6] & 0x40:          # DF clear: fragmentable
            return None
        src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        quoted = frame[l3:l3 + ihl + 8]
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu & 0xFFFF) + quoted
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, 64, 1, 0, dst, src)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        return eth + ip + icmp
    if et == ETH_P_IPV6 and len(frame) >= l3 + 40:
        src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
        quoted = frame[l3:l3 + 1232]          # as much as fits the IPv6 minimum MTU
        icmp = struct.pack("!BBHI", 2, 0, 0, mtu) + quoted
        pseudo = dst + src + struct.pack("!IxxxB", len(icmp), 58)
        icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, dst, src)
        return eth + ip + icmp
    return None


_F_NEEDS_CSUM = 1          # VIRTIO_NET_HDR_F_NEEDS_CSUM
_GSO_TCPV4 = 1             # VIRTIO_NET_HDR_GSO_TCPV4
_IP_MAX = 0xFFFF           # the largest IPv4 total length a part can state
_TCP_CWR, _TCP_PSH, _TCP_FIN = 0x80, 0x08, 0x01


def _fold(s: int) -> int:
    """One's-complement sum ``s`` folded to 16 bits, not complemented (a partial checksum)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def split_tcp_super_frame(vnet: bytes | memoryview, frame: bytes | memoryview,
                          limit: int) -> list[tuple[bytes, bytes, memoryview]] | None:
    """Cut an IPv4 TCP GSO super-frame into GSO super-frames of at most ``limit`` bytes.

    A container may hand us a "BIG TCP" frame (> 64 KiB, IPv4 total length 0) that a
    peer cannot take whole. Each part holds whole ``gso_size`` segments (only the last
    may be short) and carries the headers the kernel's tcp_gso_segment/inet_gso_segment
    would give its first segment: total length, IP id bumped per segment, IP checksum,
    sequence number, FIN/PSH on the last part only, CWR on the first only, and the TCP
    pseudo-header partial sum (CHECKSUM_PARTIAL), so segmenting the parts later yields
    the very segments segmenting the original would. The vnet header is kept, except
    that a part of one segment is no longer GSO (gso_type GSO_NONE, gso_size 0);
    NEEDS_CSUM stays, so the checksum is still completed downstream.

    Returns ``(vnet header, Ethernet+IPv4+TCP headers, payload view into frame)`` per
    part. A frame that already fits comes back as one part, rewritten the same way
    (for a well-formed frame only the vnet header of a single segment changes).
    Parts never state an IPv4 length above 65535, whatever ``limit`` says.

    None when it is not something to cut: not TCPv4 GSO, gso_size 0, no NEEDS_CSUM,
    a VLAN tag, not IPv4/TCP, an IP fragment, bad IHL/data offset, a frame shorter
    than its headers, a total length that is neither the frame's nor 0 for a BIG
    frame, csum_start/csum_offset not at the TCP checksum, or ``limit`` too small for
    the headers and one segment.
    """
    if len(vnet) < VNET.size:
        return None
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET.unpack_from(vnet, 0)
    if gso_type & ~GSO_ECN != _GSO_TCPV4 or gso_size == 0 or not flags & _F_NEEDS_CSUM:
        return None
    mv = memoryview(frame)
    n, l3 = len(mv), 14
    if n < l3 + 20 or mv[12] != ETH_P_IP >> 8 or mv[13] != ETH_P_IP & 0xFF:
        return None
    ihl = (mv[l3] & 0x0F) * 4
    l4 = l3 + ihl
    if mv[l3] >> 4 != 4 or ihl < 20 or mv[l3 + 9] != 6 or n < l4 + 20:
        return None
    tot_len, ip_id, frag = struct.unpack_from("!HHH", mv, l3 + 2)
    if frag & 0x3FFF:                              # MF or an offset: no whole TCP segment here
        return None
    if tot_len != n - l3 and not (tot_len == 0 and n - l3 > _IP_MAX):
        return None
    thl = (mv[l4 + 12] >> 4) * 4
    hlen = l4 + thl
    if thl < 20 or n < hlen or csum_start != l4 or csum_offset != 16:
        return None
    room = min(limit, l3 + _IP_MAX) - hlen
    if room < gso_size:
        return None
    step = room // gso_size * gso_size
    hdr = bytearray(mv[:hlen])
    seq = struct.unpack_from("!I", hdr, l4 + 4)[0]
    tcp_flags = hdr[l4 + 13]
    pseudo = sum(struct.unpack_from("!4H", hdr, l3 + 12)) + 6       # addresses + protocol
    gso = VNET.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    single = VNET.pack(flags, GSO_NONE, hdr_len, 0, csum_start, csum_offset)
    total = n - hlen
    parts: list[tuple[bytes, bytes, memoryview]] = []
    off = 0
    while True:
        size = min(step, total - off)
        last = off + size >= total
        f = tcp_flags if off == 0 else tcp_flags & ~_TCP_CWR
        if not last:
            f &= ~(_TCP_PSH | _TCP_FIN)
        struct.pack_into("!HHHBBH", hdr, l3 + 2, hlen - l3 + size, (ip_id + off // gso_size) & 0xFFFF,
                         frag, hdr[l3 + 8], 6, 0)
        struct.pack_into("!H", hdr, l3 + 10, checksum(bytes(hdr[l3:l4])))
        struct.pack_into("!I", hdr, l4 + 4, (seq + off) & 0xFFFFFFFF)
        hdr[l4 + 13] = f
        struct.pack_into("!H", hdr, l4 + 16, _fold(pseudo + thl + size))
        parts.append((gso if size > gso_size else single, bytes(hdr), mv[hlen + off:hlen + off + size]))
        off += size
        if last:
            return parts
