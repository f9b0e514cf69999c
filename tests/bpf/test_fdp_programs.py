"""fastdp programs on crafted frames with BPF_PROG_TEST_RUN.

The programs are built in test mode (FDP_TEST_MODE, see bpf/fdp_abi.h): the
received tunnel key comes from skb->cb[] and every tunnel key set, redirect and
clone is recorded in fdp_test_events instead of performed, since test runs can
neither carry tunnel metadata nor redirect. All other code is the production
code. Each case is data: name, program, frame, ctx, expected verdict, expected
events, expected drop reason; output bytes must equal the input (the kernel's
VXLAN device encapsulates; the netns tier checks the wire bytes with tshark).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import pytest

from tests.bpf.fdp_helpers import allow_port, arp, eth, events, ipv4, learn, tunnel_ctx, udp
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp import heartbeat as hbm
from weave_fdp.datapath.plan import build_plan

OK, SHOT, REDIRECT = 0, 2, 7
VXLAN_IF = 100
LOCAL_MAC_A, LOCAL_MAC_B = "02:00:00:00:01:0a", "02:00:00:00:01:0b"
MAC_ON_2, MAC_ON_3, MAC_ON_4, MAC_ON_5, MAC_ON_6 = (f"02:00:00:00:0{i}:01" for i in (2, 3, 4, 5, 6))
BCAST = "ff:ff:ff:ff:ff:ff"
IP = {"p2": "192.0.2.2", "p3": "192.0.2.3", "p4": "192.0.2.4"}
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806


@pytest.fixture(scope="module")
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    # Mesh seen from p1: direct neighbours p2 (fastdp), p3 (fastdp), p4 (sleeve);
    # p5 behind p2; p6 is known but unreachable.
    plan = build_plan(
        local="p1", short_ids={"p1": 1, "p2": 2, "p3": 3, "p4": 4, "p5": 5, "p6": 6},
        unicast={"p2": "p2", "p3": "p3", "p4": "p4", "p5": "p2"},
        broadcast={"p1": ["p2", "p3", "p4"], "p2": ["p3"], "p5": ["p2", "p3"]},
        hop_ips=IP, modes={"p2": "fastdp", "p3": "fastdp", "p4": "sleeve"},
        ports={"vethweplA": LOCAL_MAC_A, "vethweplB": LOCAL_MAC_B}, mtu=1450)
    d.apply(plan, vxlan_ifindex=VXLAN_IF, ifindex={"vethweplA": 11, "vethweplB": 12})
    for mac, peer in ((MAC_ON_2, 2), (MAC_ON_3, 3), (MAC_ON_4, 4), (MAC_ON_5, 5), (MAC_ON_6, 6)):
        learn(d, mac, peer)
    allow_port(d, LOCAL_MAC_A, ["10.32.0.1", "10.32.9.1"])
    yield d
    d.close()


def run(dp, prog: str, frame: bytes, ctx: bytes | None = None):
    events(dp)  # clear
    before = dp.drops()
    res = bpf_syscall.prog_test_run(dp.prog_fd(prog), frame, ctx_in=ctx)
    after = dp.drops()
    new = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return res, events(dp), new


def ip_frame(dst: str, src: str = LOCAL_MAC_A) -> bytes:
    return eth(dst, src, ETH_P_IP) + ipv4("10.32.0.1", "10.32.0.2", 17, udp(4000, 5000))


@dataclass
class Case:
    name: str
    prog: str
    frame: bytes
    verdict: int
    events: list
    drop: str | None = None
    ctx: bytes | None = None


V = abi.vni
TX = "fdp_from_container"
RX = "fdp_from_tunnel"

CASES = [
    Case("unicast to a direct fastdp peer", TX, ip_frame(MAC_ON_2), REDIRECT,
         [("TUNNEL_KEY", V(1, 2), IP["p2"], 0), ("REDIRECT", 0, "", VXLAN_IF)]),
    Case("unicast relayed: next hop p2 for p5", TX, ip_frame(MAC_ON_5), REDIRECT,
         [("TUNNEL_KEY", V(1, 5), IP["p2"], 0), ("REDIRECT", 0, "", VXLAN_IF)]),
    Case("unicast to a sleeve peer goes to the bridge", TX, ip_frame(MAC_ON_4), OK, []),
    Case("unicast to a local container goes to the bridge", TX, ip_frame(LOCAL_MAC_B), OK, []),
    Case("unicast to an unreachable peer", TX, ip_frame(MAC_ON_6), SHOT, [], "no-route"),
    Case("broadcast ARP: one clone per fastdp hop, sleeve hop skipped", TX,
         eth(BCAST, LOCAL_MAC_A, ETH_P_ARP) + arp(LOCAL_MAC_A, "10.32.0.1", "10.32.0.2"), OK,
         [("TUNNEL_KEY", V(1, 1), IP["p2"], 0), ("CLONE", 0, "", VXLAN_IF),
          ("TUNNEL_KEY", V(1, 1), IP["p3"], 0), ("CLONE", 0, "", VXLAN_IF)]),
    Case("unknown unicast floods like broadcast", TX, ip_frame("02:99:99:99:99:99"), OK,
         [("TUNNEL_KEY", V(1, 1), IP["p2"], 0), ("CLONE", 0, "", VXLAN_IF),
          ("TUNNEL_KEY", V(1, 1), IP["p3"], 0), ("CLONE", 0, "", VXLAN_IF)]),
    # (the kernel's test-run refuses IPv4 frames shorter than an IPv4 header, so
    # truncation is exercised through the header length fields)
    Case("IPv4 header length below 20 bytes", TX, eth(MAC_ON_2, LOCAL_MAC_A, ETH_P_IP)
         + bytes([0x43]) + ipv4("10.32.0.1", "10.32.0.2", 17, udp(1, 2))[1:], SHOT, [], "truncated"),
    Case("truncated UDP ports", TX,
         eth(MAC_ON_2, LOCAL_MAC_A, ETH_P_IP) + ipv4("10.32.0.1", "10.32.0.2", 17, b"")[:20] + b"\x00\x01",
         SHOT, [], "truncated"),
    Case("802.3 length frame (STP)", TX, eth("01:80:c2:00:00:00", LOCAL_MAC_A, 38) + bytes(38), SHOT, [],
         "not-ethernet-ii"),
    Case("multicast source MAC", TX, ip_frame(MAC_ON_2, src="01:00:5e:00:00:01"), SHOT, [], "bad-src-mac"),
    # --- received from the VXLAN device
    Case("no tunnel key", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2), SHOT, [], "no-tunnel-key"),
    Case("VNI wider than 24 bits", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2), SHOT, [], "bad-vni",
         tunnel_ctx(0x1000002, IP["p2"])),
    Case("unknown source peer", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2), SHOT, [], "unknown-peer",
         tunnel_ctx(V(77, 1), IP["p2"])),
    Case("unknown destination peer", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2), SHOT, [], "unknown-peer",
         tunnel_ctx(V(2, 99), IP["p2"])),
    Case("frame claiming to come from this peer", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2), SHOT, [], "loop",
         tunnel_ctx(V(1, 2), IP["p2"])),
    Case("truncated inner frame (IHL 60 bytes, 24 present)", RX, eth(LOCAL_MAC_A, MAC_ON_2, ETH_P_IP)
         + bytes([0x4f]) + ipv4("10.32.0.1", "10.32.0.2", 17, b"")[1:] + bytes(4), SHOT, [], "truncated",
         tunnel_ctx(V(2, 1), IP["p2"])),
    Case("unicast to a local container: straight into its ethwe", RX, ip_frame(LOCAL_MAC_A, src=MAC_ON_2),
         REDIRECT, [("REDIRECT_PEER", 0, "", 11)], None, tunnel_ctx(V(2, 1), IP["p2"])),
    Case("flood from p2: on along p2's tree (p3), then every local port", RX,
         eth(BCAST, MAC_ON_2, ETH_P_ARP) + bytes(28), SHOT,
         [("TUNNEL_KEY", V(2, 2), IP["p3"], 0), ("CLONE", 0, "", VXLAN_IF), ("CLONE", 0, "", 11),
          ("CLONE", 0, "", 12)], None, tunnel_ctx(V(2, 2), IP["p2"])),
    Case("flood of p5 relayed by p2 is not sent back to p2", RX,
         eth(BCAST, MAC_ON_5, ETH_P_ARP) + bytes(28), SHOT,
         [("TUNNEL_KEY", V(5, 5), IP["p3"], 0), ("CLONE", 0, "", VXLAN_IF), ("CLONE", 0, "", 11),
          ("CLONE", 0, "", 12)], None, tunnel_ctx(V(5, 5), IP["p2"])),
    Case("relay p2 -> p3 through this peer, VNI kept", RX, ip_frame(MAC_ON_3, src=MAC_ON_2), REDIRECT,
         [("TUNNEL_KEY", V(2, 3), IP["p3"], 0), ("REDIRECT", 0, "", VXLAN_IF)], None,
         tunnel_ctx(V(2, 3), IP["p2"])),
    Case("relay toward a sleeve next hop is refused", RX, ip_frame(MAC_ON_4, src=MAC_ON_2), SHOT, [],
         "not-fastdp", tunnel_ctx(V(2, 4), IP["p2"])),
    Case("relay toward an unreachable peer", RX, ip_frame(MAC_ON_6, src=MAC_ON_2), SHOT, [],
         "no-route", tunnel_ctx(V(2, 6), IP["p2"])),
    Case("heartbeat pong goes up to the router", RX,
         hbm.encode_frame(hbm.Heartbeat(hbm.PONG, 2, 9, 12345), 100), OK, [],
         None, tunnel_ctx(V(2, 1), IP["p2"])),
    Case("other 0x88b5 frames go up to the router", RX, eth("02:00:00:00:00:01", MAC_ON_2, 0x88B5) + bytes(46),
         OK, [], None, tunnel_ctx(V(2, 1), IP["p2"])),
]


def test_heartbeat_ping_is_answered_in_the_kernel(dp) -> None:
    ping = hbm.encode_frame(hbm.Heartbeat(hbm.PING, 2, 9, 12345), 1450)
    res, evs, drops = run(dp, RX, ping, tunnel_ctx(V(2, 1), IP["p2"]))
    assert res.retval == REDIRECT and drops == {}
    assert evs == [("TUNNEL_KEY", V(1, 2), IP["p2"], 0), ("REDIRECT", 0, "", VXLAN_IF)]
    assert res.data == hbm.encode_frame(hbm.Heartbeat(hbm.PONG, 1, 9, 12345), 1450)  # exact bytes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_program_case(dp, case: Case) -> None:
    res, evs, drops = run(dp, case.prog, case.frame, case.ctx)
    assert res.retval == case.verdict
    assert evs == case.events
    assert drops == ({case.drop: 1} if case.drop else {})
    assert res.data == case.frame  # collect_md: no bytes change here


def test_receive_learns_source_mac_but_never_overwrites_a_local_one(dp) -> None:
    learned = "02:00:00:00:02:77"
    run(dp, RX, ip_frame(LOCAL_MAC_A, src=learned), tunnel_ctx(V(2, 1), IP["p2"]))
    e = dp.maps["fdp_learned"].get(abi.mac_key(learned))
    assert e is not None and e.peer == 2 and e.flags == abi.MacFlags.LEARNED
    # a peer claiming a local container's MAC does not steal it, nor gets it learned
    run(dp, RX, ip_frame(LOCAL_MAC_A, src=LOCAL_MAC_B), tunnel_ctx(V(2, 1), IP["p2"]))
    e = dp.maps["fdp_macs"].get(abi.mac_key(LOCAL_MAC_B))
    assert e is not None and e.flags == abi.MacFlags.LOCAL and e.ifindex == 12
    assert dp.maps["fdp_learned"].get(abi.mac_key(LOCAL_MAC_B)) is None


def test_counters_per_flow_and_per_peer(dp) -> None:
    frame = eth(MAC_ON_3, LOCAL_MAC_A, ETH_P_IP) + ipv4("10.32.9.1", "10.32.9.3", 17, udp(1111, 2222))
    before = {p["short_id"]: p for p in dp.peer_stats({3: "p3"})}[3]
    for _ in range(3):
        res, _, _ = run(dp, TX, frame)
        assert res.retval == REDIRECT
    flows = [f for f in dp.flows({3: "p3"}) if f["src_ip"] == "10.32.9.1"]
    assert len(flows) == 1
    f = flows[0]
    assert (f["dst_ip"], f["proto"], f["sport"], f["dport"]) == ("10.32.9.3", 17, 1111, 2222)
    assert (f["packets"], f["bytes"], f["path"], f["dir"], f["via"]) == (3, 3 * len(frame), "fastdp", "tx", "p3")
    after = {p["short_id"]: p for p in dp.peer_stats({3: "p3"})}[3]
    assert after["tx_packets"] - before["tx_packets"] == 3
    assert after["tx_bytes"] - before["tx_bytes"] == 3 * len(frame)


def test_unconfigured_datapath_passes_container_frames_and_drops_tunnel_ones() -> None:
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    try:
        allow_port(d, LOCAL_MAC_A, ["10.32.0.1"])
        assert bpf_syscall.prog_test_run(d.prog_fd(TX), ip_frame(MAC_ON_2)).retval == OK
        res = bpf_syscall.prog_test_run(d.prog_fd(RX), ip_frame(LOCAL_MAC_A), ctx_in=tunnel_ctx(V(2, 1), IP["p2"]))
        assert res.retval == SHOT
        assert d.drops() == {"no-config": 1}
    finally:
        d.close()


def test_a_mac_that_attaches_here_is_unlearned_and_delivered_locally() -> None:
    """fdp_from_container asks fdp_learned before fdp_macs: attaching a container whose
    MAC was learned from a peer (it moved here) deletes that entry, and the ageing
    sweep deletes one a program learned in the instant before the attach; else its
    frames would go back to the peer."""
    import time

    from weave_fdp.datapath.fastdp.loader import FastDatapath

    moved = "02:00:00:00:02:99"

    def plan(ports: dict[str, str]):
        return build_plan(
            local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"}, broadcast={"p1": ["p2"]},
            hop_ips={"p2": IP["p2"]}, modes={"p2": "fastdp"}, ports=ports, mtu=1450)

    def learned_now() -> None:
        entry = abi.MacEntry(peer=2, flags=abi.MacFlags.LEARNED, updated_ns=time.monotonic_ns())
        d.maps["fdp_learned"].set(abi.mac_key(moved), entry)

    d = FastDatapath(test_mode=True).load()
    try:
        ifindex = {"vethweplA": 11, "vethweplM": 13}
        d.apply(plan({"vethweplA": LOCAL_MAC_A}), vxlan_ifindex=VXLAN_IF, ifindex=ifindex)
        allow_port(d, LOCAL_MAC_A, ["10.32.0.1"])
        learned_now()
        res, evs, _ = run(d, TX, ip_frame(moved))
        assert res.retval == REDIRECT and evs[0] == ("TUNNEL_KEY", V(1, 2), IP["p2"], 0)

        d.apply(plan({"vethweplA": LOCAL_MAC_A, "vethweplM": moved}), vxlan_ifindex=VXLAN_IF, ifindex=ifindex)
        allow_port(d, LOCAL_MAC_A, ["10.32.0.1"])
        assert d.maps["fdp_learned"].get(abi.mac_key(moved)) is None
        res, evs, _ = run(d, TX, ip_frame(moved))
        assert (res.retval, evs) == (OK, [])  # to the bridge, which delivers it here

        learned_now()  # learned by a program racing the attach: fresh, so only the sweep's check removes it
        assert d.age_macs(300) == [moved]
        assert d.maps["fdp_learned"].get(abi.mac_key(moved)) is None
        res, evs, _ = run(d, TX, ip_frame(moved))
        assert (res.retval, evs) == (OK, [])
    finally:
        d.close()
