"""fastdp heartbeats: VXLAN frames over the real fastdp path, sized to the MTU.

A ping is a complete VXLAN datagram sent from a UDP socket to the peer's UDP
6784 with DF set, whose inner frame (ethertype 0x88b5) is as long as the overlay
MTU allows: if it arrives, the path and the MTU both work. The peer's kernel
decapsulates it, its fdp_from_tunnel program passes it up (TC_ACT_OK) and its
router reads it from an AF_PACKET socket on the VXLAN device, then answers with
a pong the same way. RTT = pong arrival - ping time echoed back.

Inner payload (network order): magic "FDPH", version u8, kind u8 (1 ping,
2 pong), src short ID u16, seq u32, echo time u64 (sender's monotonic ns),
then zero padding. Anything else is ignored (never fatal).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from weave_fdp.datapath.fastdp import abi

MAGIC = abi.HB_MAGIC.to_bytes(4, "big")   # b"FDPH"
VERSION = 1
PING, PONG = abi.HB_PING, abi.HB_PONG
_HDR = struct.Struct("!4sBBHIQ")   # kind at abi.HB_KIND_OFF, src at abi.HB_SRC_OFF (the programs read both)
_VXLAN = struct.Struct("!B3xI")  # flags (I bit), reserved, VNI << 8
HB_SRC_MAC = bytes.fromhex("020000fd0001")  # locally administered, unicast
HB_DST_MAC = bytes.fromhex("020000fd0002")
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
ETH_HLEN = 14


@dataclass(frozen=True)
class Heartbeat:
    kind: int
    src: int
    seq: int
    echo_ns: int


def encode_frame(hb: Heartbeat, mtu: int) -> bytes:
    """The inner Ethernet frame, padded to ``mtu`` bytes of payload."""
    body = _HDR.pack(MAGIC, VERSION, hb.kind, hb.src & abi.SHORT_ID_MASK, hb.seq & 0xFFFFFFFF, hb.echo_ns)
    body += bytes(max(0, mtu - len(body)))
    return HB_DST_MAC + HB_SRC_MAC + struct.pack("!H", abi.HEARTBEAT_ETHERTYPE) + body


def encode_datagram(hb: Heartbeat, src_peer: int, dst_peer: int, mtu: int) -> bytes:
    """A whole VXLAN UDP payload (RFC 7348 header + inner frame)."""
    return _VXLAN.pack(abi.VXLAN_FLAG_I, abi.vni(src_peer, dst_peer) << 8) + encode_frame(hb, mtu)


def decode_frame(frame: bytes) -> Heartbeat | None:
    """A heartbeat from an inner frame, or None for anything malformed."""
    if len(frame) < ETH_HLEN + _HDR.size:
        return None
    if struct.unpack_from("!H", frame, 12)[0] != abi.HEARTBEAT_ETHERTYPE:
        return None
    magic, version, kind, src, seq, echo = _HDR.unpack_from(frame, ETH_HLEN)
    if magic != MAGIC or version != VERSION or kind not in (PING, PONG):
        return None
    return Heartbeat(kind, src, seq, echo)


def sender_socket() -> socket.socket:
    """UDP socket for heartbeats: DF set, so an MTU too big fails instead of fragmenting."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.setblocking(False)
    return s


def receiver_socket(ifname: str) -> socket.socket:
    """AF_PACKET socket on the VXLAN device for the heartbeat ethertype only."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(abi.HEARTBEAT_ETHERTYPE))
    s.bind((ifname, abi.HEARTBEAT_ETHERTYPE))
    s.setblocking(False)
    return s
