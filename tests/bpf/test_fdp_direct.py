"""The direct path (bpf/lib/direct.h) on crafted packets with BPF_PROG_TEST_RUN.

bpf_skb_adjust_room works in test runs, so the encapsulation and the
decapsulation are checked byte for byte; only the redirects are recorded
instead of performed (test builds, see bpf/fdp_abi.h). Transmit: the container
veth program pushes outer IPv4 + UDP 6784 + VXLAN + inner Ethernet after the
frame's own Ethernet header (which the neighbour table rewrites on the way out).
Receive: the underlay program strips them for local containers and leaves every
other packet untouched (TC_ACT_UNSPEC) for the kernel and the VXLAN device.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tests.bpf.fdp_helpers import allow_port, arp, eth, events, ipv4, learn, udp
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import UnderlayRoute, build_plan

SHOT, REDIRECT, PASS = 2, 7, 0xFFFFFFFF  # PASS: TC_ACT_UNSPEC (-1) as the kernel reports it
VXLAN_IF, UL_IF = 100, 5
LOCAL_A, LOCAL_B = "02:00:00:00:01:0a", "02:00:00:00:01:0b"
ON_2, ON_3, ON_5, ON_7 = "02:00:00:00:02:01", "02:00:00:00:03:01", "02:00:00:00:05:01", "02:00:00:00:07:01"
ME, IP2, IP3, IP7, GW = "192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.7", "192.0.2.254"
TX, RX_UL = "fdp_from_container", "fdp_from_underlay"
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
MTU = 1450


@pytest.fixture(scope="module")
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    # p1 (this host): fastdp neighbours p2 (on-link), p3 (no usable route: no underlay
    # entry) and p7 (through a gateway); p5 behind p2.
    plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2, "p3": 3, "p5": 5, "p7": 7},
                      unicast={"p2": "p2", "p3": "p3", "p5": "p2", "p7": "p7"}, broadcast={},
                      hop_ips={"p2": IP2, "p3": IP3, "p7": IP7}, modes={"p2": "fastdp", "p3": "fastdp", "p7": "fastdp"},
                      ports={"vethweplA": LOCAL_A, "vethweplB": LOCAL_B}, mtu=MTU)
    d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12}, direct=True,
            underlay={2: UnderlayRoute(UL_IF, "eth0", ME, IP2), 7: UnderlayRoute(UL_IF, "eth0", ME, GW)})
    for mac, peer in ((ON_2, 2), (ON_3, 3), (ON_5, 5), (ON_7, 7)):
        learn(d, mac, peer)
    allow_port(d, LOCAL_A, ["10.32.0.1", "10.32.7.1"])
    yield d
    d.close()


def run(dp, prog: str, frame: bytes):
    events(dp)
    before = dp.drops()
    res = bpf_syscall.prog_test_run(dp.prog_fd(prog), frame)
    after = dp.drops()
    return res, events(dp), {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def csum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def outer(inner: bytes, src: str, dst: str, vni: int, sport: int, *, flags: int = 0x08, ihl: int = 5,
          frag: int = 0x4000, eth_dst: str = "00:00:00:00:00:00", bad_csum: bool = False) -> bytes:
    """IPv4 + UDP 6784 + VXLAN around ``inner`` (an Ethernet frame), as RFC 7348 has it."""
    opts = bytes(4 * (ihl - 5))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + 16 + len(inner), 0, frag, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)) + opts)
    struct.pack_into("!H", ip, 10, csum(bytes(ip)) ^ (1 if bad_csum else 0))
    return (eth(eth_dst, "02:00:00:00:ee:02", ETH_P_IP) + bytes(ip)
            + struct.pack("!HHHH", sport, 6784, 16 + len(inner), 0)
            + struct.pack("!BBHI", flags, 0, 0, vni << 8) + inner)


def ip_frame(dst: str, src: str = LOCAL_A, sip: str = "10.32.0.1", dip: str = "10.32.0.2",
             ports: tuple[int, int] = (4000, 5000), pad: int = 18) -> bytes:
    return eth(dst, src, ETH_P_IP) + ipv4(sip, dip, 17, udp(*ports, b"x" * pad))


def expect_encap(frame: bytes, dst_ip: str, vni: int) -> bytes:
    """The frame after the transmit program: own Ethernet header, then outer headers, then the frame."""
    sport = abi.vxlan_src_port("10.32.0.1", "10.32.0.2", 17, 4000, 5000)
    return frame[:14] + outer(frame, ME, dst_ip, vni, sport)[14:]


# --------------------------------------------------------------------------- transmit

def test_encap_exact_bytes_and_redirect_to_the_neighbour(dp) -> None:
    frame = ip_frame(ON_2)
    res, evs, drops = run(dp, TX, frame)
    assert res.retval == REDIRECT and drops == {}
    assert evs == [("REDIRECT_NEIGH", 0, IP2, UL_IF)]
    assert res.data == expect_encap(frame, IP2, abi.vni(1, 2))
    ip = res.data[14:34]
    assert csum(ip) == 0, "outer IPv4 checksum"
    assert struct.unpack("!H", res.data[40:42])[0] == 0, "outer UDP checksum is zero"


def test_encap_relayed_destination_goes_to_the_next_hop(dp) -> None:
    frame = ip_frame(ON_5)
    res, evs, _ = run(dp, TX, frame)
    assert res.retval == REDIRECT and evs == [("REDIRECT_NEIGH", 0, IP2, UL_IF)]
    assert res.data == expect_encap(frame, IP2, abi.vni(1, 5))  # outer dst = next hop, VNI names p5


def test_encap_through_a_gateway_sends_to_the_gateway(dp) -> None:
    frame = ip_frame(ON_7)
    res, evs, _ = run(dp, TX, frame)
    assert evs == [("REDIRECT_NEIGH", 0, GW, UL_IF)]
    assert res.data == expect_encap(frame, IP7, abi.vni(1, 7))  # outer dst is still the peer


@pytest.mark.parametrize("frame,why", [
    (ip_frame(ON_3), "no underlay route to the next hop"),
    (eth(ON_2, LOCAL_A, ETH_P_ARP) + arp(LOCAL_A, "10.32.0.1", "10.32.0.2"), "not IPv4 (adjust_room's encap wants an IP skb)"),
    (ip_frame(ON_2, pad=MTU - 28 + 1), "larger than the overlay MTU: the device path reports it"),
], ids=["no-route-entry", "arp", "oversize"])
def test_encap_falls_back_to_the_vxlan_device(dp, frame: bytes, why: str) -> None:
    res, evs, drops = run(dp, TX, frame)
    dst_peer = 3 if frame[:6] == abi.mac_bytes(ON_3) else 2
    ip = IP3 if dst_peer == 3 else IP2
    assert res.retval == REDIRECT and drops == {}, why
    assert evs == [("TUNNEL_KEY", abi.vni(1, dst_peer), ip, 0), ("REDIRECT", 0, "", VXLAN_IF)], why
    assert res.data == frame, why


def test_full_size_frame_is_encapsulated(dp) -> None:
    frame = ip_frame(ON_2, pad=MTU - 28)
    assert len(frame) == MTU + 14
    res, evs, _ = run(dp, TX, frame)
    assert evs == [("REDIRECT_NEIGH", 0, IP2, UL_IF)] and len(res.data) == MTU + 14 + 50


def test_source_port_follows_the_flow() -> None:
    a = abi.vxlan_src_port("10.32.0.1", "10.32.0.2", 6, 40000, 5201)
    assert 49152 <= a <= 65535
    assert a == abi.vxlan_src_port("10.32.0.1", "10.32.0.2", 6, 40000, 5201)
    ports = {abi.vxlan_src_port("10.32.0.1", "10.32.0.2", 6, 40000 + i, 5201) for i in range(64)}
    assert len(ports) > 48, "flows spread over source ports"


def test_encap_counts_the_frame_as_the_container_sent_it(dp) -> None:
    frame = ip_frame(ON_2, sip="10.32.7.1", dip="10.32.7.2")
    before = {p["short_id"]: p for p in dp.peer_stats({2: "p2"})}[2]
    for _ in range(3):
        assert run(dp, TX, frame)[0].retval == REDIRECT
    after = {p["short_id"]: p for p in dp.peer_stats({2: "p2"})}[2]
    assert (after["tx_packets"] - before["tx_packets"], after["tx_bytes"] - before["tx_bytes"]) == (3, 3 * len(frame))
    f = [f for f in dp.flows({2: "p2"}) if f["src_ip"] == "10.32.7.1"]
    assert [(x["packets"], x["bytes"], x["dir"], x["via"]) for x in f] == [(3, 3 * len(frame), "tx", "p2")]


# --------------------------------------------------------------------------- receive

def from_p2(inner: bytes, vni: int | None = None, **kw) -> bytes:
    return outer(inner, IP2, ME, abi.vni(2, 1) if vni is None else vni, 50000, **kw)


def test_decap_exact_bytes_learn_count_and_redirect_peer(dp) -> None:
    src_mac = "02:00:00:00:02:42"
    inner = ip_frame(LOCAL_A, src=src_mac, sip="10.32.8.2", dip="10.32.8.1")
    before = {p["short_id"]: p for p in dp.peer_stats({2: "p2"})}[2]
    res, evs, drops = run(dp, RX_UL, from_p2(inner))
    assert res.retval == REDIRECT and drops == {}
    assert evs == [("REDIRECT_PEER", 0, "", 11)]
    assert res.data == inner  # exactly the frame the other container sent
    e = dp.maps["fdp_learned"].get(abi.mac_key(src_mac))
    assert e is not None and e.peer == 2 and e.flags == abi.MacFlags.LEARNED
    after = {p["short_id"]: p for p in dp.peer_stats({2: "p2"})}[2]
    assert (after["rx_packets"] - before["rx_packets"], after["rx_bytes"] - before["rx_bytes"]) == (1, len(inner))
    f = [f for f in dp.flows({2: "p2"}) if f["src_ip"] == "10.32.8.2"]
    assert [(x["packets"], x["bytes"], x["dir"], x["via"]) for x in f] == [(1, len(inner), "rx", "p2")]


def test_encap_then_decap_is_the_identity(dp) -> None:
    frame = ip_frame(ON_2)
    wire = run(dp, TX, frame)[0].data
    # what p2 would receive, seen from p2's side: swap roles by addressing our own container
    inner = ip_frame(LOCAL_B, src=ON_2)
    back = outer(inner, IP2, ME, abi.vni(2, 1), struct.unpack("!H", wire[34:36])[0])
    res, evs, _ = run(dp, RX_UL, back)
    assert res.data == inner and evs == [("REDIRECT_PEER", 0, "", 12)]


INNER = ip_frame(LOCAL_A, src=ON_2)
PASS_CASES = [
    ("plain UDP to another port", eth("00:00:00:00:00:00", "02:00:00:00:ee:02", ETH_P_IP)
     + ipv4(IP2, ME, 17, udp(1000, 53))),
    ("TCP", eth("00:00:00:00:00:00", "02:00:00:00:ee:02", ETH_P_IP) + ipv4(IP2, ME, 6, bytes(40))),
    ("ARP on the underlay", eth("ff:ff:ff:ff:ff:ff", "02:00:00:00:ee:02", ETH_P_ARP) + bytes(28)),
    ("outer IPv4 options", from_p2(INNER, ihl=6)),
    ("outer IPv4 fragment", from_p2(INNER, frag=0x2000)),
    ("bad outer IPv4 checksum", from_p2(INNER, bad_csum=True)),
    ("not for this host's MAC (PACKET_OTHERHOST)", from_p2(INNER, eth_dst="02:00:00:00:99:99")),
    ("flood (VNI dst == src)", from_p2(eth("ff:ff:ff:ff:ff:ff", ON_2, ETH_P_ARP) + bytes(28), vni=abi.vni(2, 2))),
    ("relay (VNI dst is another peer)", from_p2(ip_frame(ON_5, src=ON_2), vni=abi.vni(2, 5))),
    ("unknown source peer", from_p2(INNER, vni=abi.vni(77, 1))),
    ("claims to come from this peer", from_p2(INNER, vni=abi.vni(1, 1))),
    ("inner ARP", from_p2(eth(LOCAL_A, ON_2, ETH_P_ARP) + bytes(28))),
    ("heartbeat", from_p2(eth(LOCAL_A, ON_2, 0x88B5) + bytes(46))),
    ("inner destination unknown here", from_p2(ip_frame("02:00:00:00:01:99", src=ON_2))),
    ("inner multicast", from_p2(ip_frame("01:00:5e:01:02:03", src=ON_2))),
    ("inner frame truncated", from_p2(eth(LOCAL_A, ON_2, ETH_P_IP) + bytes([0x45]) + bytes(10))),
]


@pytest.mark.parametrize("name,pkt", PASS_CASES, ids=[c[0] for c in PASS_CASES])
def test_underlay_passes_everything_else_untouched(dp, name: str, pkt: bytes) -> None:
    res, evs, drops = run(dp, RX_UL, pkt)
    assert res.retval == PASS, name
    assert (evs, drops) == ([], {}), name
    assert res.data == pkt, name


def test_direct_off_passes_and_encapsulates_through_the_device(dp) -> None:
    cfg = dp.maps["fdp_config"].get(__import__("ctypes").c_uint32(0))
    dp.configure(cfg.local_peer, cfg.vxlan_ifindex, cfg.mtu, direct=False)
    try:
        pkt = from_p2(INNER)
        res, evs, _ = run(dp, RX_UL, pkt)
        assert (res.retval, evs, res.data) == (PASS, [], pkt)
        frame = ip_frame(ON_2)
        res, evs, _ = run(dp, TX, frame)
        assert evs == [("TUNNEL_KEY", abi.vni(1, 2), IP2, 0), ("REDIRECT", 0, "", VXLAN_IF)]
        assert res.data == frame
    finally:
        dp.configure(cfg.local_peer, cfg.vxlan_ifindex, cfg.mtu, direct=True)
