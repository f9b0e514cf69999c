"""A container sends only from its own addresses: fdp_from_container's guard on crafted frames.

The port test runs come in by (the namespace's loopback) is registered as a
container with one MAC and two IPv4 addresses. Source MAC, IPv4 source and the
ARP sender addresses must be those; everything else is a named drop, and a port
with no registration sends nothing.
"""

from __future__ import annotations

import ctypes

import pytest

from tests.bpf.fdp_helpers import TEST_RUN_IFINDEX, allow_port, arp, eth, events, ipv4, learn, udp
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import build_plan

OK, SHOT, REDIRECT = 0, 2, 7
VXLAN_IF = 100
ME, OTHER_LOCAL = "02:00:00:00:01:0a", "02:00:00:00:01:0b"
ON_2 = "02:00:00:00:02:01"
MY_IPS = ["10.32.1.1", "10.32.1.7"]
IP2 = "192.0.2.2"
BCAST = "ff:ff:ff:ff:ff:ff"
TX = "fdp_from_container"
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD


@pytest.fixture(scope="module")
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"}, broadcast={"p1": ["p2"]},
                      hop_ips={"p2": IP2}, modes={"p2": "fastdp"},
                      ports={"vethweplA": ME, "vethweplB": OTHER_LOCAL}, mtu=1450)
    d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12})
    learn(d, ON_2, 2)
    allow_port(d, ME, MY_IPS)
    yield d
    d.close()


def run(dp, frame: bytes):
    events(dp)
    before = dp.drops()
    res = bpf_syscall.prog_test_run(dp.prog_fd(TX), frame)
    after = dp.drops()
    return res, events(dp), {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def ip_from(src_mac: str, src_ip: str, dst_mac: str = ON_2) -> bytes:
    return eth(dst_mac, src_mac, ETH_P_IP) + ipv4(src_ip, "10.32.2.1", 17, udp(4000, 5000))


TO_P2 = [("TUNNEL_KEY", abi.vni(1, 2), IP2, 0), ("REDIRECT", 0, "", VXLAN_IF)]
FLOOD = [("TUNNEL_KEY", abi.vni(1, 1), IP2, 0), ("CLONE", 0, "", VXLAN_IF)]

CASES = [
    ("own MAC and address", ip_from(ME, MY_IPS[0]), REDIRECT, TO_P2, None),
    ("own MAC, second address", ip_from(ME, MY_IPS[1]), REDIRECT, TO_P2, None),
    ("another container's MAC", ip_from(OTHER_LOCAL, MY_IPS[0]), SHOT, [], "spoofed-mac"),
    ("a remote container's MAC", ip_from(ON_2, MY_IPS[0], dst_mac=OTHER_LOCAL), SHOT, [], "spoofed-mac"),
    ("another address", ip_from(ME, "10.32.1.2"), SHOT, [], "spoofed-ip"),
    ("source 0.0.0.0", ip_from(ME, "0.0.0.0"), SHOT, [], "spoofed-ip"),
    ("ARP request of its own", eth(BCAST, ME, ETH_P_ARP) + arp(ME, MY_IPS[0], "10.32.2.1"), OK, FLOOD, None),
    ("ARP probe (sender 0.0.0.0, RFC 5227)", eth(BCAST, ME, ETH_P_ARP) + arp(ME, "0.0.0.0", "10.32.1.9"), OK,
     FLOOD, None),
    ("ARP claiming another address", eth(BCAST, ME, ETH_P_ARP) + arp(ME, "10.32.2.1", "10.32.2.1", op=2), SHOT,
     [], "spoofed-arp"),
    ("ARP naming another sender MAC", eth(BCAST, ME, ETH_P_ARP) + arp(OTHER_LOCAL, MY_IPS[0], "10.32.2.1"), SHOT,
     [], "spoofed-arp"),
    ("ARP cut short", eth(BCAST, ME, ETH_P_ARP) + arp(ME, MY_IPS[0], "10.32.2.1")[:20], SHOT, [], "truncated"),
    ("IPv6 from its own MAC", eth(ON_2, ME, ETH_P_IPV6) + bytes(40), REDIRECT, TO_P2, None),
    ("IPv6 from another MAC", eth(ON_2, OTHER_LOCAL, ETH_P_IPV6) + bytes(40), SHOT, [], "spoofed-mac"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_guard(dp, case) -> None:
    _name, frame, verdict, evs, drop = case
    res, got, drops = run(dp, frame)
    assert (res.retval, got, drops) == (verdict, evs, {drop: 1} if drop else {})


def test_a_port_with_no_registration_sends_nothing(dp) -> None:
    key = ctypes.c_uint32(TEST_RUN_IFINDEX)
    saved = dp.maps["fdp_port_addrs"].get(key)
    dp.maps["fdp_port_addrs"].delete(key)
    try:
        res, evs, drops = run(dp, ip_from(ME, MY_IPS[0]))
        assert (res.retval, evs, drops) == (SHOT, [], {"unknown-port": 1})
    finally:
        dp.maps["fdp_port_addrs"].set(key, saved)


def test_apply_registers_each_port_with_its_addresses() -> None:
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    try:
        plan = build_plan(local="p1", short_ids={"p1": 1}, unicast={}, broadcast={}, hop_ips={}, modes={},
                          ports={"vethweplA": ME, "vethweplB": OTHER_LOCAL},
                          port_ips={"vethweplA": ["10.32.1.7/12", "10.32.1.1/12"]})
        d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12})
        a = d.maps["fdp_port_addrs"].get(ctypes.c_uint32(11))
        assert abi.mac_str(a.mac) == ME and [abi.be32_to_ip(a.ips[i]) for i in range(a.count)] == MY_IPS
        b = d.maps["fdp_port_addrs"].get(ctypes.c_uint32(12))
        assert abi.mac_str(b.mac) == OTHER_LOCAL and b.count == 0
        # a container that leaves takes its registration with it
        plan = build_plan(local="p1", short_ids={"p1": 1}, unicast={}, broadcast={}, hop_ips={}, modes={},
                          ports={"vethweplA": ME}, port_ips={"vethweplA": ["10.32.1.1/12"]})
        d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12})
        assert d.maps["fdp_port_addrs"].get(ctypes.c_uint32(12)) is None
        assert d.maps["fdp_port_addrs"].get(ctypes.c_uint32(11)).count == 1
    finally:
        d.close()
