"""Constants and enums of abi.py match the text of bpf/fdp_abi.h (no compiler needed)."""

from __future__ import annotations

import re

from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.source import BPF_DIR

HEADER = (BPF_DIR / "fdp_abi.h").read_text()


def _defines() -> dict[str, int]:
    return {m.group(1): int(m.group(2), 0)
            for m in re.finditer(r"#define (FDP_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", HEADER)}


def _enum(prefix: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 0) for m in re.finditer(rf"\b({prefix}\w+)\s*=\s*(\d+)", HEADER)}


def test_defines_match() -> None:
    d = _defines()
    pairs = {"FDP_ABI_VERSION": abi.ABI_VERSION, "FDP_MAX_PEERS": abi.MAX_PEERS, "FDP_MAX_MACS": abi.MAX_MACS,
             "FDP_MAX_FLOWS": abi.MAX_FLOWS,
             "FDP_MAX_LOCAL_MACS": abi.MAX_LOCAL_MACS, "FDP_MAX_MACS_PER_PEER": abi.MAX_MACS_PER_PEER,
             "FDP_MAX_PORT_IPS": abi.MAX_PORT_IPS, "FDP_MAX_BCAST_HOPS": abi.MAX_BCAST_HOPS,
             "FDP_MAX_LOCAL_PORTS": abi.MAX_LOCAL_PORTS, "FDP_VXLAN_PORT": abi.VXLAN_PORT,
             "FDP_SHORT_ID_BITS": abi.SHORT_ID_BITS, "FDP_SHORT_ID_MASK": abi.SHORT_ID_MASK,
             "FDP_VNI_MAX": abi.VNI_MAX, "FDP_TUNNEL_TTL": abi.TUNNEL_TTL,
             "FDP_HEARTBEAT_ETHERTYPE": abi.HEARTBEAT_ETHERTYPE, "FDP_CONFIG_READY": abi.CONFIG_READY,
             "FDP_TEST_MAX_EVENTS": abi.TEST_MAX_EVENTS, "FDP_HB_MAGIC": abi.HB_MAGIC,
             "FDP_HB_KIND_OFF": abi.HB_KIND_OFF, "FDP_HB_SRC_OFF": abi.HB_SRC_OFF, "FDP_HB_PING": abi.HB_PING,
             "FDP_HB_PONG": abi.HB_PONG, "FDP_CONFIG_DIRECT": abi.CONFIG_DIRECT,
             "FDP_VXLAN_HLEN": abi.VXLAN_HLEN, "FDP_ENCAP_LEN": abi.ENCAP_LEN,
             "FDP_VXLAN_FLAG_I": abi.VXLAN_FLAG_I, "FDP_SPORT_MIN": abi.SPORT_MIN,
             "FDP_SPORT_MASK": abi.SPORT_MASK, "FDP_MAC_REFRESH_NS": abi.MAC_REFRESH_NS,
             "FDP_MAC_AGEING_S": abi.MAC_AGEING_S}
    for name, value in pairs.items():
        assert d[name] == value, name


def test_enums_match() -> None:
    for prefix, enum in (("FDP_MODE_", abi.Mode), ("FDP_MAC_", abi.MacFlags), ("FDP_PATH_", abi.Path),
                         ("FDP_EV_", abi.TestKind), ("FDP_NEIGH_", abi.NeighFlags)):
        c = _enum(prefix)
        assert {k[len(prefix):]: v for k, v in c.items()} == {e.name: e.value for e in enum}, prefix
    drops = _enum("FDP_DROP_")
    assert drops.pop("FDP_DROP_MAX") == abi.DROP_MAX
    assert {k[len("FDP_DROP_"):]: v for k, v in drops.items()} == {e.name: e.value for e in abi.DropReason}


def test_vni_roundtrip() -> None:
    assert abi.vni(0x123, 0x456) == 0x456123
    assert abi.split_vni(0x456123) == (0x123, 0x456)
    assert abi.vni(5, 5) <= abi.VNI_MAX


def test_byte_order_helpers() -> None:
    import ctypes
    v = abi.ip_to_be32("192.0.2.1")
    assert bytes(ctypes.c_uint32(v)) == bytes([192, 0, 2, 1])
    assert abi.be32_to_ip(v) == "192.0.2.1"
    assert abi.mac_str(abi.mac_bytes("0A:1b:2c:3d:4e:5f")) == "0a:1b:2c:3d:4e:5f"
