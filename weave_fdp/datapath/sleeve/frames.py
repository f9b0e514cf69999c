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
