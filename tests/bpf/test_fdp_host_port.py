"""The host's own port (the weave bridge) on crafted frames with BPF_PROG_TEST_RUN.

fdp_from_container also runs at the weave bridge's tc egress: the host is a port
like a container, with the bridge's MAC and addresses in fdp_port_addrs/fdp_macs and
the bridge in fdp_config.host_ifindex. Frames for it are delivered up the host's
stack (bpf_redirect / bpf_clone_redirect with BPF_F_INGRESS), never with
redirect_peer (a bridge has no peer). Test runs come in on ifindex 1, so the host's
port is ifindex 1 here; the case of a container sending is run by giving ifindex 1
a container's addresses for a moment.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest

from tests.bpf.fdp_helpers import TEST_RUN_IFINDEX, allow_port, arp, eth, events, ipv4, learn, run, tunnel_ctx, udp
from tests.bpf.test_fdp_direct import outer
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import UnderlayRoute, build_plan, host_port

OK, SHOT, REDIRECT = 0, 2, 7
VXLAN_IF, UL_IF, HOST_IF = 100, 5, TEST_RUN_IFINDEX
BRIDGE_MAC = "02:00:00:00:00:be"
CONT_A, CONT_B = "02:00:00:00:01:0a", "02:00:00:00:01:0b"
ON_2, ON_3, ON_4 = "02:00:00:00:02:01", "02:00:00:00:03:01", "02:00:00:00:04:01"
BCAST = "ff:ff:ff:ff:ff:ff"
ME, IP2, IP3, IP4 = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
EXPOSED, DNS_IP = "10.32.0.100", "169.254.53.53"
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
TX, RX, RX_UL = "fdp_from_container", "fdp_from_tunnel", "fdp_from_underlay"
V = abi.vni


@pytest.fixture(scope="module")
def dp() -> Iterator[object]:
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    # p1 (this host, exposed as 10.32.0.100, weaveDNS on the bridge): fastdp neighbours p2
    # (direct path) and p3 (VXLAN device: no underlay route), sleeve neighbour p4.
    host = host_port("weave", BRIDGE_MAC, [f"{EXPOSED}/12", f"{DNS_IP}/32", "fe80::be/64"])
    plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2, "p3": 3, "p4": 4},
                      unicast={"p2": "p2", "p3": "p3", "p4": "p4"}, broadcast={"p1": ["p2", "p3", "p4"],
                                                                               "p2": ["p3"]},
                      hop_ips={"p2": IP2, "p3": IP3, "p4": IP4},
                      modes={"p2": "fastdp", "p3": "fastdp", "p4": "sleeve"},
                      ports={"vethweplA": CONT_A, "vethweplB": CONT_B},
                      port_ips={"vethweplA": ["10.32.0.1/12"], "vethweplB": ["10.32.0.2/12"]}, host=host)
    d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12, "weave": HOST_IF},
            direct=True, underlay={2: UnderlayRoute(UL_IF, "eth0", ME, IP2)})
    for mac, peer in ((ON_2, 2), (ON_3, 3), (ON_4, 4)):
        learn(d, mac, peer)
    yield d
    d.close()


def from_host(dst_mac: str, src_ip: str = EXPOSED, dst_ip: str = "10.32.3.1") -> bytes:
    return eth(dst_mac, BRIDGE_MAC, ETH_P_IP) + ipv4(src_ip, dst_ip, 17, udp(4000, 5000))


def test_maps_hold_the_host_port(dp) -> None:
    cfg = dp.maps["fdp_config"].get(ctypes.c_uint32(0))
    assert cfg.host_ifindex == HOST_IF
    e = dp.maps["fdp_macs"].get(abi.mac_key(BRIDGE_MAC))
    assert e is not None and e.flags == abi.MacFlags.LOCAL and e.ifindex == HOST_IF
    pa = dp.maps["fdp_port_addrs"].get(ctypes.c_uint32(HOST_IF))
    assert abi.mac_str(pa.mac) == BRIDGE_MAC
    assert sorted(abi.be32_to_ip(pa.ips[i]) for i in range(pa.count)) == [EXPOSED, DNS_IP]
    ports = dp.maps["fdp_ports"].get(ctypes.c_uint32(0))
    assert [ports.ifindex[i] for i in range(ports.count)] == [11, 12]   # the host gets its flood copy apart


HOST_CASES = [
    # (name, frame, verdict, events, drop)
    ("to a container on p3: tunnel key, VXLAN device", from_host(ON_3), REDIRECT,
     [("TUNNEL_KEY", V(1, 3), IP3, 0), ("REDIRECT", 0, "", VXLAN_IF)], None),
    ("to a container on p2: direct path, out of the underlay", from_host(ON_2), REDIRECT,
     [("REDIRECT_NEIGH", 0, IP2, UL_IF)], None),
    ("to a container on sleeve peer p4: the bridge hands it to the sleeve", from_host(ON_4), OK, [], None),
    ("to a local container: the bridge delivers it", from_host(CONT_A, dst_ip="10.32.0.1"), OK, [], None),
    ("weaveDNS answering a local container from 169.254.53.53", from_host(CONT_A, DNS_IP, "10.32.0.1"), OK,
     [], None),
    ("ARP for a remote container: one copy per fastdp hop, then the bridge",
     eth(BCAST, BRIDGE_MAC, ETH_P_ARP) + arp(BRIDGE_MAC, EXPOSED, "10.32.3.1"), OK,
     [("TUNNEL_KEY", V(1, 1), IP2, 0), ("CLONE", 0, "", VXLAN_IF),
      ("TUNNEL_KEY", V(1, 1), IP3, 0), ("CLONE", 0, "", VXLAN_IF)], None),
    ("from an address the bridge does not hold (hidden)", from_host(ON_3, src_ip="10.32.0.99"), SHOT, [],
     "spoofed-ip"),
    ("from another MAC than the bridge's", eth(ON_3, "02:00:00:00:00:99", ETH_P_IP)
     + ipv4(EXPOSED, "10.32.3.1", 17, udp(1, 2)), SHOT, [], "spoofed-mac"),
]


@pytest.mark.parametrize("name,frame,verdict,evs,drop", HOST_CASES, ids=[c[0] for c in HOST_CASES])
def test_host_sends(dp, name, frame, verdict, evs, drop) -> None:
    res, got, drops = run(dp, TX, frame)
    assert res.retval == verdict
    assert got == evs
    assert drops == ({drop: 1} if drop else {})


def test_unicast_for_the_host_goes_up_its_stack(dp) -> None:
    frame = eth(BRIDGE_MAC, ON_3, ETH_P_IP) + ipv4("10.32.3.1", EXPOSED, 17, udp(5000, 4000))
    res, evs, drops = run(dp, RX, frame, tunnel_ctx(V(3, 1), IP3))
    assert res.retval == REDIRECT and drops == {}
    assert evs == [("REDIRECT_INGRESS", 0, "", HOST_IF)]


def test_flood_reaches_the_host_too(dp) -> None:
    frame = eth(BCAST, ON_2, ETH_P_ARP) + arp(ON_2, "10.32.2.1", EXPOSED)
    res, evs, drops = run(dp, RX, frame, tunnel_ctx(V(2, 2), IP2))
    assert res.retval == SHOT and drops == {}
    assert evs == [("TUNNEL_KEY", V(2, 2), IP3, 0), ("CLONE", 0, "", VXLAN_IF), ("CLONE", 0, "", 11),
                   ("CLONE", 0, "", 12), ("CLONE_INGRESS", 0, "", HOST_IF)]


def test_direct_path_decap_for_the_host_goes_up_its_stack(dp) -> None:
    inner = eth(BRIDGE_MAC, ON_2, ETH_P_IP) + ipv4("10.32.2.1", EXPOSED, 17, udp(5000, 4000, b"x" * 18))
    res, evs, drops = run(dp, RX_UL, outer(inner, IP2, ME, V(2, 1), 50000))
    assert res.retval == REDIRECT and drops == {}
    assert evs == [("REDIRECT_INGRESS", 0, "", HOST_IF)]
    assert res.data == inner


def test_container_to_the_bridge_mac_stays_on_the_bridge(dp) -> None:
    """weaveDNS queries (to 169.254.53.53 at the bridge's MAC) are local: no copy to any peer."""
    pa = dp.maps["fdp_port_addrs"]
    saved = pa.get(ctypes.c_uint32(TEST_RUN_IFINDEX))
    allow_port(dp, CONT_A, ["10.32.0.1"])   # ifindex 1 is container A's veth for this case
    try:
        query = eth(BRIDGE_MAC, CONT_A, ETH_P_IP) + ipv4("10.32.0.1", DNS_IP, 17, udp(33333, 53))
        res, evs, drops = run(dp, TX, query)
        assert (res.retval, evs, drops) == (OK, [], {})
        flows = [f for f in dp.flows() if f["dst_ip"] == DNS_IP]
        assert [(f["dir"], f["dport"]) for f in flows] == [("local", 53)]
    finally:
        pa.set(ctypes.c_uint32(TEST_RUN_IFINDEX), saved)


def test_without_the_host_port_nothing_is_delivered_to_the_bridge() -> None:
    """A plan with no host port (the router stopped) clears it: the bridge's MAC is unknown again."""
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    try:
        plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"}, broadcast={},
                          hop_ips={"p2": IP2}, modes={"p2": "fastdp"}, ports={"vethweplA": CONT_A},
                          host=host_port("weave", BRIDGE_MAC, [f"{EXPOSED}/12"]))
        d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "weave": HOST_IF})
        assert d.maps["fdp_macs"].get(abi.mac_key(BRIDGE_MAC)) is not None
        d.apply(build_plan(local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"}, broadcast={},
                           hop_ips={"p2": IP2}, modes={"p2": "fastdp"}, ports={"vethweplA": CONT_A}),
                vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11})
        assert d.maps["fdp_macs"].get(abi.mac_key(BRIDGE_MAC)) is None
        assert d.maps["fdp_port_addrs"].get(ctypes.c_uint32(HOST_IF)) is None
        assert d.maps["fdp_config"].get(ctypes.c_uint32(0)).host_ifindex == 0
        frame = eth(BRIDGE_MAC, ON_2, ETH_P_IP) + ipv4("10.32.2.1", EXPOSED, 17, udp(5000, 4000))
        res = bpf_syscall.prog_test_run(d.prog_fd(RX), frame, ctx_in=tunnel_ctx(V(2, 1), IP2))
        assert res.retval == SHOT   # flooded to the containers only (clones), the original ends
    finally:
        d.close()
