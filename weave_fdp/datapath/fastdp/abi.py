"""Python mirror of bpf/fdp_abi.h: every constant, enum and struct both sides see.

Field for field the same layout (ctypes follows the C ABI of this machine);
tests/bpf/test_abi_layout.py measures sizeof/offsetof in a BPF program and
compares with these classes, and tests/unit/test_abi.py parses the header (and
bpf/lib/maps.h) and checks every ``#define``, enum, struct and map against this
module, so nothing in the header can lack its mirror. Byte order as in the
header: *_ip, ethertype and ports are network order, the rest host order.

Python code takes these values from here and never writes them out again (the
VXLAN port, the short ID width, the map limits).
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

ABI_VERSION = 8

MAX_PEERS = 4096
MAX_MACS = 16384
MAX_LOCAL_MACS = 256
MAX_MACS_PER_PEER = 4096
MAX_PORT_IPS = 8
MAX_FLOWS = 16384
FLOW_SLOTS = 256
FLOW_SLOT_IDLE_NS = 2_000_000_000
MAX_BCAST_HOPS = 16
MAX_LOCAL_PORTS = 256
MAC_REFRESH_NS = 1_000_000_000
DNS_NAME_MAX = 128
DNS_MAX_ADDRS = 16
DNS_MAX_NAMES = 8192
DNS_MAX_SOURCES = 8192
MAC_AGEING_S = 300

VXLAN_PORT = 6784
SHORT_ID_BITS = 12
SHORT_ID_MASK = 0xFFF
VNI_MAX = 0xFFFFFF
TUNNEL_TTL = 64
HEARTBEAT_ETHERTYPE = 0x88B5
HB_MAGIC = 0x46445048
HB_KIND_OFF = 5
HB_SRC_OFF = 6
HB_PING = 1
HB_PONG = 2
CONFIG_READY = 1
CONFIG_DIRECT = 2
VXLAN_HLEN = 8
ENCAP_LEN = 50
VXLAN_FLAG_I = 0x08
SPORT_MIN = 49152
SPORT_MASK = 0x3FFF
TEST_MAX_EVENTS = 32
DNS_CONFIG_ENABLED = 1
DNS_UDP_MIN = 512
DNS_EDNS_SIZE = 4096
DNS_REPLY_TTL = 64


class Mode(IntEnum):
    NONE = 0
    FASTDP = 1
    SLEEVE = 2


class MacFlags(IntEnum):
    LOCAL = 1
    LEARNED = 2


class PeerFlags(IntEnum):
    KNOWN = 1


class NeighFlags(IntEnum):
    KNOWN = 1
    SEALED = 2
    XFRM = 4


class Path(IntEnum):
    LOCAL = 0
    TX = 1
    RX = 2
    RELAY = 3
    SLEEVE = 4
    FLOOD = 5


class DropReason(IntEnum):
    NONE = 0
    TRUNCATED = 1
    NOT_ETHERNET_II = 2
    BAD_SRC_MAC = 3
    NO_CONFIG = 4
    NO_TUNNEL_KEY = 5
    BAD_VNI = 6
    UNKNOWN_PEER = 7
    LOOP = 8
    NO_ROUTE = 9
    NOT_FASTDP = 10
    TUNNEL_KEY = 11
    CLONE = 12
    ENCAP = 13
    DECAP = 14
    UNKNOWN_SOURCE = 15
    WRONG_SOURCE = 16
    SOURCE_NOT_FASTDP = 17
    SEALED_PEER = 18
    BAD_VXLAN = 19
    UNKNOWN_PORT = 20
    SPOOFED_MAC = 21
    SPOOFED_IP = 22
    SPOOFED_ARP = 23
    LEARN_LIMIT = 24


DROP_MAX = 25

class DnsStat(IntEnum):
    ANSWERED = 0
    RATE_LIMITED = 1
    PASS_MISS = 2
    PASS_HEADER = 3
    PASS_QUESTION = 4
    PASS_NAME = 5
    PASS_EDNS = 6
    PASS_SIZE = 7
    PASS_PACKET = 8
    ERROR = 9


DNS_STAT_MAX = 10

#: the names the report shows for each DNS fast-path counter
DNS_STAT_NAMES: dict[int, str] = {s.value: s.name.lower() for s in DnsStat}

#: the names the CLI and the report show for each drop reason
DROP_NAMES: dict[int, str] = {r.value: r.name.lower().replace("_", "-") for r in DropReason if r}


class TestKind(IntEnum):
    __test__ = False  # not a pytest class
    TUNNEL_KEY = 1
    REDIRECT = 2
    REDIRECT_PEER = 3
    CLONE = 4
    REDIRECT_NEIGH = 5
    REDIRECT_INGRESS = 6
    CLONE_INGRESS = 7


u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class Config(ctypes.Structure):
    _fields_ = [("abi_version", u32), ("local_peer", u16), ("flags", u16),
                ("vxlan_ifindex", u32), ("mtu", u32), ("host_ifindex", u32)]


class MacKey(ctypes.Structure):
    _fields_ = [("mac", u8 * 6), ("pad", u16)]


class MacEntry(ctypes.Structure):
    _fields_ = [("peer", u16), ("flags", u8), ("pad", u8), ("ifindex", u32), ("updated_ns", u64)]


class Peer(ctypes.Structure):
    _fields_ = [("nexthop_ip", u32), ("nexthop_peer", u16), ("mode", u8), ("flags", u8)]


class Hop(ctypes.Structure):
    _fields_ = [("ip", u32), ("peer", u16), ("mode", u8), ("pad", u8)]


class Bcast(ctypes.Structure):
    _fields_ = [("count", u32), ("pad", u32), ("hops", Hop * MAX_BCAST_HOPS)]


class Ports(ctypes.Structure):
    _fields_ = [("count", u32), ("ifindex", u32 * MAX_LOCAL_PORTS)]


class Underlay(ctypes.Structure):
    _fields_ = [("ifindex", u32), ("src_ip", u32), ("gw_ip", u32), ("pad", u32)]


class PortAddrs(ctypes.Structure):
    _fields_ = [("mac", u8 * 6), ("count", u16), ("ips", u32 * MAX_PORT_IPS)]


class Neigh(ctypes.Structure):
    _fields_ = [("peer", u16), ("mode", u8), ("flags", u8)]


class FlowKey(ctypes.Structure):
    _fields_ = [("src_mac", u8 * 6), ("dst_mac", u8 * 6), ("ethertype", u16), ("proto", u8),
                ("pad", u8), ("src_ip", u32), ("dst_ip", u32), ("sport", u16), ("dport", u16)]


class FlowStats(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("last_seen_ns", u64), ("via_peer", u16),
                ("path", u8), ("pad", u8 * 5)]


class FlowSlot(ctypes.Structure):
    _fields_ = [("key", FlowKey), ("pad", u32), ("st", FlowStats)]


class PeerStats(ctypes.Structure):
    _fields_ = [("tx_packets", u64), ("tx_bytes", u64), ("rx_packets", u64), ("rx_bytes", u64)]


class DnsConfig(ctypes.Structure):
    _fields_ = [("flags", u32), ("listen_ip", u32), ("listen_port", u16), ("pad", u16), ("pad2", u32),
                ("rate_interval_ns", u64), ("rate_burst_ns", u64)]


class DnsKey(ctypes.Structure):
    _fields_ = [("name", u8 * DNS_NAME_MAX)]


class DnsEntry(ctypes.Structure):
    _fields_ = [("count", u32), ("ttl", u32), ("addrs", u32 * DNS_MAX_ADDRS)]


class TestEvent(ctypes.Structure):
    __test__ = False
    _fields_ = [("kind", u32), ("vni", u32), ("ip", u32), ("ifindex", u32)]


#: every ABI struct by its C name (the layout test walks this)
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "fdp_config": Config, "fdp_mac_key": MacKey, "fdp_mac_entry": MacEntry, "fdp_peer": Peer,
    "fdp_hop": Hop, "fdp_bcast": Bcast, "fdp_ports": Ports, "fdp_underlay": Underlay, "fdp_neigh": Neigh,
    "fdp_port_addrs": PortAddrs, "fdp_flow_key": FlowKey,
    "fdp_flow_stats": FlowStats, "fdp_flow_slot": FlowSlot, "fdp_peer_stats": PeerStats,
    "fdp_test_event": TestEvent,
    "fdp_dns_config": DnsConfig, "fdp_dns_key": DnsKey, "fdp_dns_entry": DnsEntry,
}

#: every ABI enum by its C name (an enum's ``*_MAX`` member is the module constant of that name)
ENUMS: dict[str, type[IntEnum]] = {
    "fdp_mode": Mode, "fdp_mac_flags": MacFlags, "fdp_peer_flags": PeerFlags, "fdp_neigh_flags": NeighFlags,
    "fdp_path": Path, "fdp_drop_reason": DropReason, "fdp_test_kind": TestKind, "fdp_dns_stat": DnsStat,
}


@dataclass(frozen=True)
class MapSpec:
    """One map of bpf/lib/maps.h: its BPF type, key and value layouts and size."""

    kind: str                      # BPF_TABLE type: "array", "hash", "lru_percpu_hash", ...
    key: type[ctypes._SimpleCData] | type[ctypes.Structure]
    value: type[ctypes._SimpleCData] | type[ctypes.Structure]
    max_entries: int

    @property
    def percpu(self) -> bool:
        return "percpu" in self.kind


#: the maps of bpf/lib/maps.h by name, in its order (the loader wraps exactly these)
MAPS: dict[str, MapSpec] = {
    "fdp_config": MapSpec("array", u32, Config, 1),
    "fdp_macs": MapSpec("hash", MacKey, MacEntry, MAX_LOCAL_MACS),          # local containers
    "fdp_learned": MapSpec("lru_hash", MacKey, MacEntry, MAX_MACS),        # learned from peers
    "fdp_learn_count": MapSpec("array", u32, u32, MAX_PEERS),
    "fdp_port_addrs": MapSpec("hash", u32, PortAddrs, MAX_LOCAL_PORTS),
    "fdp_peers": MapSpec("array", u32, Peer, MAX_PEERS),
    "fdp_bcast": MapSpec("array", u32, Bcast, MAX_PEERS),
    "fdp_ports": MapSpec("array", u32, Ports, 1),
    "fdp_drops": MapSpec("percpu_array", u32, u64, DROP_MAX),
    "fdp_peer_stats": MapSpec("percpu_array", u32, PeerStats, MAX_PEERS),
    "fdp_underlay": MapSpec("array", u32, Underlay, MAX_PEERS),
    "fdp_neigh": MapSpec("hash", u32, Neigh, MAX_PEERS),
    "fdp_flows": MapSpec("lru_percpu_hash", FlowKey, FlowStats, MAX_FLOWS),
    "fdp_flow_slots": MapSpec("percpu_array", u32, FlowSlot, FLOW_SLOTS),   # in front of fdp_flows
    "fdp_dns_config": MapSpec("array", u32, DnsConfig, 1),
    "fdp_dns_names": MapSpec("hash", DnsKey, DnsEntry, DNS_MAX_NAMES),
    "fdp_dns_sources": MapSpec("lru_hash", u32, u64, DNS_MAX_SOURCES),
    "fdp_dns_stats": MapSpec("percpu_array", u32, u64, DNS_STAT_MAX),
}


# --- conversions ---------------------------------------------------------------

def vni(src_peer: int, dst_peer: int) -> int:
    """VNI = src | dst << 12 (a flood carries dst == src)."""
    return (src_peer & SHORT_ID_MASK) | ((dst_peer & SHORT_ID_MASK) << SHORT_ID_BITS)


def vxlan_src_port(src_ip: str, dst_ip: str, proto: int, sport: int = 0, dport: int = 0) -> int:
    """Outer UDP source port the direct path picks for a flow (mirrors fdp_flow_port in bpf/lib/direct.h).

    The C code hashes the flow key's fields as the u32/u16 values they are in memory
    (network order on this little-endian machine), so this does the same.
    """
    m = 0xFFFFFFFF
    sp, dp = (struct.unpack("=H", struct.pack("!H", p))[0] for p in (sport, dport))
    h = ip_to_be32(src_ip) ^ ip_to_be32(dst_ip) ^ ((sp << 16) | dp) ^ proto
    h ^= h >> 16
    h = (h * 0x7FEB352D) & m
    h ^= h >> 15
    h = (h * 0x846CA68B) & m
    h ^= h >> 16
    return SPORT_MIN + (h & SPORT_MASK)


def split_vni(value: int) -> tuple[int, int]:
    """(src_peer, dst_peer) of a VNI (fdp_vni_src/fdp_vni_dst in bpf/lib/tunnel.h)."""
    return value & SHORT_ID_MASK, (value >> SHORT_ID_BITS) & SHORT_ID_MASK


def ip_to_be32(ip: str) -> int:
    """An IPv4 address as the u32 whose memory holds it in network order."""
    return struct.unpack("=I", socket.inet_aton(ip))[0]


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


def be16_to_int(value: int) -> int:
    """A u16 holding network order (ports, ethertype) as a number."""
    return struct.unpack("!H", struct.pack("=H", value))[0]


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(raw: bytes | ctypes.Array) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def mac_key(mac: str) -> MacKey:
    key = MacKey()
    ctypes.memmove(key.mac, mac_bytes(mac), 6)
    return key
