"""Who may send what over UDP 6784: the receive programs' source check, on crafted packets.

A frame is taken only when its outer source address is a direct neighbour's
(fdp_neigh), the VNI's source peer is that neighbour (or a peer behind it that is
no direct neighbour itself), and the neighbour's connection is in fastdp mode and
may carry plain VXLAN (not sealed, unless ESP protected it). Everything else is a
counted drop with a named reason; UDP 6784 that is no VXLAN is one too.
Test builds (FDP_TEST_MODE, see bpf/fdp_abi.h): the tunnel key comes from skb->cb[].
"""

from __future__ import annotations

import struct

import pytest

from tests.bpf.fdp_helpers import eth, events, ipv4, run, tunnel_ctx, udp
from tests.bpf.test_fdp_direct import csum, outer
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp import heartbeat as hbm
from weave_fdp.datapath.plan import UnderlayRoute, build_plan

OK, SHOT, REDIRECT, PASS = 0, 2, 7, 0xFFFFFFFF
VXLAN_IF, UL_IF = 100, 5
LOCAL_A = "02:00:00:00:01:0a"
MAC = {p: f"02:00:00:00:0{p}:01" for p in range(2, 9)}
ME = "192.0.2.1"
IP = {p: f"192.0.2.{p}" for p in range(2, 9)}
STRANGER = "192.0.2.66"
BCAST = "ff:ff:ff:ff:ff:ff"
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
RX, RX_UL = "fdp_from_tunnel", "fdp_from_underlay"
V = abi.vni


@pytest.fixture(scope="module")
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    # p1 (this host): neighbours p2, p3 (fastdp), p4 (sleeve), p7 (fastdp but its
    # connection must be sealed: --password), p8 (sealed, through ESP); p5 behind p2;
    # p6 known, unreachable.
    names = {f"p{i}": i for i in range(1, 9)}
    hops = {f"p{i}": IP[i] for i in (2, 3, 4, 7, 8)}
    plan = build_plan(local="p1", short_ids=names,
                      unicast={**{h: h for h in hops}, "p5": "p2"},
                      broadcast={"p2": ["p3"], "p5": ["p3"]}, hop_ips=hops,
                      modes={"p2": "fastdp", "p3": "fastdp", "p4": "sleeve", "p7": "fastdp", "p8": "fastdp"},
                      ports={"vethweplA": LOCAL_A}, mtu=1450, sealed={"p7", "p8"}, xfrm={"p8"})
    d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11}, direct=True,
            underlay={p: UnderlayRoute(UL_IF, "eth0", ME, IP[p]) for p in (2, 3, 7, 8)})
    yield d
    d.close()


def to_a(src_peer: int) -> bytes:
    """A unicast IPv4/UDP frame from a container on ``src_peer`` to our container A."""
    return eth(LOCAL_A, MAC[src_peer], ETH_P_IP) + ipv4(f"10.32.{src_peer}.1", "10.32.1.1", 17, udp(4000, 5000))


DELIVER_A = [("REDIRECT_PEER", 0, "", 11)]
FLOOD_LOCAL = [("CLONE", 0, "", 11)]

# (name, frame, VNI, outer source, verdict, events, drop reason)
TUNNEL_CASES = [
    ("stranger's unicast naming p2 -> us", to_a(2), V(2, 1), STRANGER, SHOT, [], "unknown-source"),
    ("stranger's forged relay p2 -> p3", to_a(2), V(2, 3), STRANGER, SHOT, [], "unknown-source"),
    ("stranger's forged flood of p2", eth(BCAST, MAC[2], ETH_P_ARP) + bytes(28), V(2, 2), STRANGER, SHOT, [],
     "unknown-source"),
    ("stranger's heartbeat", hbm.encode_frame(hbm.Heartbeat(hbm.PING, 2, 1, 5), 200), V(2, 1), STRANGER, SHOT,
     [], "unknown-source"),
    ("p2's frame from p3's address", to_a(2), V(2, 1), IP[3], SHOT, [], "wrong-source"),
    ("p2's flood from p3's address", eth(BCAST, MAC[2], ETH_P_ARP) + bytes(28), V(2, 2), IP[3], SHOT, [],
     "wrong-source"),
    ("p2's heartbeat from p3's address", hbm.encode_frame(hbm.Heartbeat(hbm.PING, 2, 1, 5), 200), V(2, 1), IP[3],
     SHOT, [], "wrong-source"),
    ("plain VXLAN from a sleeve neighbour", to_a(4), V(4, 1), IP[4], SHOT, [], "source-not-fastdp"),
    ("plain VXLAN from a neighbour that must be sealed", to_a(7), V(7, 1), IP[7], SHOT, [], "sealed-peer"),
    ("a sealed neighbour's relay", to_a(7), V(7, 3), IP[7], SHOT, [], "sealed-peer"),
    ("a sealed neighbour whose VXLAN came through ESP", to_a(8), V(8, 1), IP[8], REDIRECT, DELIVER_A, None),
    ("p2's own frame", to_a(2), V(2, 1), IP[2], REDIRECT, DELIVER_A, None),
    ("p5's frame relayed by p2 (p5 is no neighbour)", to_a(5), V(5, 1), IP[2], REDIRECT, DELIVER_A, None),
    ("unreachable p6's frame relayed by p2", to_a(6), V(6, 1), IP[2], REDIRECT, DELIVER_A, None),
    ("p2 relayed on toward p3", to_a(2), V(2, 3), IP[2], REDIRECT,
     [("TUNNEL_KEY", V(2, 3), IP[3], 0), ("REDIRECT", 0, "", VXLAN_IF)], None),
]


@pytest.mark.parametrize("case", TUNNEL_CASES, ids=[c[0] for c in TUNNEL_CASES])
def test_tunnel_source_check(dp, case) -> None:
    _name, frame, vni, src, verdict, evs, drop = case
    res, got, drops = run(dp, RX, frame, tunnel_ctx(vni, src))
    assert (res.retval, got, drops) == (verdict, evs, {drop: 1} if drop else {})


def test_heartbeat_of_a_sleeve_neighbour_is_answered(dp) -> None:
    """Heartbeats prove the path before the switch moves a connection to fastdp."""
    res, evs, drops = run(dp, RX, hbm.encode_frame(hbm.Heartbeat(hbm.PING, 4, 9, 5), 200), tunnel_ctx(V(4, 1), IP[4]))
    assert (res.retval, drops) == (REDIRECT, {})
    assert evs == [("TUNNEL_KEY", V(1, 4), IP[4], 0), ("REDIRECT", 0, "", VXLAN_IF)]


def test_refused_frames_teach_no_mac(dp) -> None:
    spoof = "02:00:00:00:02:99"
    frame = eth(LOCAL_A, spoof, ETH_P_IP) + ipv4("10.32.2.9", "10.32.1.1", 17, udp(1, 2))
    run(dp, RX, frame, tunnel_ctx(V(3, 1), STRANGER))
    run(dp, RX, frame, tunnel_ctx(V(2, 1), IP[3]))
    assert dp.maps["fdp_macs"].get(abi.mac_key(spoof)) is None


# --------------------------------------------------------------------------- underlay (direct path)

def vx(inner: bytes, src: str, vni: int, **kw) -> bytes:
    return outer(inner, src, ME, vni, 50000, **kw)


def garbage(src: str, payload: bytes) -> bytes:
    """UDP 6784 to this host (sound IPv4 header) carrying ``payload``."""
    ip = bytearray(ipv4(src, ME, 17, udp(40000, 6784, payload)))
    struct.pack_into("!H", ip, 10, csum(bytes(ip[:20])))
    return eth("00:00:00:00:00:00", "02:00:00:00:ee:66", ETH_P_IP) + bytes(ip)


UNDERLAY_CASES = [
    ("stranger's VXLAN for our container", vx(to_a(2), STRANGER, V(2, 1)), SHOT, [], "unknown-source"),
    ("stranger's forged relay", vx(to_a(2), STRANGER, V(2, 3)), SHOT, [], "unknown-source"),
    ("garbage: 5 bytes", garbage(STRANGER, b"hello"), SHOT, [], "bad-vxlan"),
    ("garbage: no VXLAN I flag", vx(to_a(2), IP[2], V(2, 1), flags=0), SHOT, [], "bad-vxlan"),
    ("garbage: VXLAN header cut short", garbage(IP[2], bytes([8, 0, 0, 0, 0, 0])), SHOT, [], "bad-vxlan"),
    ("garbage: inner frame shorter than Ethernet", garbage(IP[2], bytes([8, 0, 0, 0, 0, 0, 0x21, 0]) + bytes(10)),
     SHOT, [], "bad-vxlan"),
    ("p2's frame from p3's address: the device path judges", vx(to_a(2), IP[3], V(2, 1)), PASS, [], None),
    ("sealed neighbour: the device path judges", vx(to_a(7), IP[7], V(7, 1)), PASS, [], None),
    ("neighbour behind ESP: its xfrm policy judges", vx(to_a(8), IP[8], V(8, 1)), PASS, [], None),
    ("sleeve neighbour: the device path judges", vx(to_a(4), IP[4], V(4, 1)), PASS, [], None),
    ("p2's own frame: stripped and delivered", vx(to_a(2), IP[2], V(2, 1)), REDIRECT, DELIVER_A, None),
]


@pytest.mark.parametrize("case", UNDERLAY_CASES, ids=[c[0] for c in UNDERLAY_CASES])
def test_underlay_source_check(dp, case) -> None:
    _name, pkt, verdict, evs, drop = case
    res, got, drops = run(dp, RX_UL, pkt)
    assert (res.retval, got, drops) == (verdict, evs, {drop: 1} if drop else {})


def test_reserved_vxlan_bits_are_garbage(dp) -> None:
    pkt = bytearray(vx(to_a(2), IP[2], V(2, 1)))
    pkt[14 + 20 + 8 + 7] = 1          # the byte after the VNI is reserved (RFC 7348)
    res, evs, drops = run(dp, RX_UL, bytes(pkt))
    assert (res.retval, evs, drops) == (SHOT, [], {"bad-vxlan": 1})
