"""The fastdp direct path between real namespaces: VXLAN headers pushed and stripped in tc.

Proof that it, not the VXLAN device, carries unicast: the device's own tx/rx
counters stay still while pings and TCP flow, the per-peer and per-flow counters
move, and what crosses the underlay is still RFC 7348 VXLAN that tshark decodes.
"""

from __future__ import annotations


import pytest

from tests.netns.fastdp_helpers import FastdpLab, vxlan_fields
from weave_fdp.datapath import hooks
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.host import reset_host
from weave_fdp.datapath.fastdp.loader import PROG_FROM_UNDERLAY

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two(make_lab):
    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1, direct=True)
    yield fl
    fl.close()


def vxlan_counters(fl: FastdpLab, i: int) -> tuple[int, int]:
    """(tx, rx) packets of host i's VXLAN device."""
    out = fl.lab.exec(i, ["cat", "/sys/class/net/vxlan-6784/statistics/tx_packets",
                          "/sys/class/net/vxlan-6784/statistics/rx_packets"]).stdout.split()
    return int(out[0]), int(out[1])


def test_unicast_bypasses_the_vxlan_device(two: FastdpLab) -> None:
    lab = two.lab
    dst = lab.container_ip(2, 1)
    assert two.ping((1, 1), dst, count=2, interval=0.1).returncode == 0  # ARP, learning: the device
    assert hooks.devices_with_program(PROG_FROM_UNDERLAY, netns=lab.host_ns(2)) == ["eth0"]
    # floods sent while the two static plans were being applied may have been dropped
    # (unknown-peer) before this test: count only what the pings below cause
    drops_before = {i: two.hosts[i].report()["drops"] for i in (1, 2)}
    before = {i: vxlan_counters(two, i) for i in (1, 2)}
    peers_before = {p["peer"]: p for p in two.hosts[1].report()["peers"]}["h2"]
    n = 30
    assert two.ping((1, 1), dst, count=n, interval=0.02).returncode == 0
    after = {i: vxlan_counters(two, i) for i in (1, 2)}
    for i in (1, 2):
        tx, rx = (a - b for a, b in zip(after[i], before[i]))
        # only floods may use the device (ARP refresh, IPv6 ND/MLD the containers send themselves)
        assert tx <= 5 and rx <= 5, f"h{i}'s VXLAN device carried {tx} tx / {rx} rx of {n} pings"
    peers = {p["peer"]: p for p in two.hosts[1].report()["peers"]}["h2"]
    assert peers["tx_packets"] - peers_before["tx_packets"] >= n
    assert peers["rx_packets"] - peers_before["rx_packets"] >= n  # replies, stripped on h1's eth0
    rx = [f for f in two.hosts[2].report()["flows"] if f["dst_ip"] == dst and f["dir"] == "rx"]
    assert rx and sum(f["packets"] for f in rx) >= n
    assert {i: two.hosts[i].report()["drops"] for i in (1, 2)} == drops_before


def test_tcp_and_mtu_on_the_direct_path(two: FastdpLab) -> None:
    lab = two.lab
    dst = lab.container_ip(2, 1)
    assert two.ping((1, 1), dst, count=1).returncode == 0
    # MTU rules unchanged: a full-size DF packet crosses, one byte more is refused locally
    assert two.ping((1, 1), dst, count=1, extra=["-M", "do", "-s", str(1450 - 28)]).returncode == 0
    assert two.ping((1, 1), dst, count=1, extra=["-M", "do", "-s", str(1450 - 27)]).returncode != 0
    tx_before = vxlan_counters(two, 1)[0]
    rx_before = vxlan_counters(two, 2)[1]
    tcp = two.iperf3((1, 1), (2, 1))["end"]["sum_received"]["bits_per_second"]
    assert tcp > 50e6, f"TCP only {tcp / 1e6:.0f} Mbit/s"
    tx = [f for f in two.hosts[1].report()["flows"] if f["dst_ip"] == dst and f["dir"] == "tx" and f["proto"] == 6]
    sent = sum(f["packets"] for f in tx)
    assert sent > 1000
    # every data packet left by the direct path: the device carried only floods
    # (ARP, IPv6 neighbour discovery/MLD the containers send on their own), a handful
    # against the >1000 TCP packets sent
    assert vxlan_counters(two, 1)[0] - tx_before <= 10
    # and arrived by it: the GSO aggregates the veths carry whole are stripped on h2's eth0
    # too (the container owns their destination), not handed to the VXLAN device
    assert vxlan_counters(two, 2)[1] - rx_before <= 10


def test_wire_is_still_valid_vxlan(two: FastdpLab) -> None:
    lab = two.lab
    rows = vxlan_fields(lab, 2, ["udp.dstport", "vxlan.vni", "ip.src", "ip.dst", "icmp.type", "udp.checksum",
                                 "vxlan.flags", "ip.flags.df", "ip.checksum.status"],
                        lambda: two.ping((1, 1), lab.container_ip(2, 1), count=4, interval=0.2))
    req = [r for r in rows if r[4] == "8"]
    assert req, rows
    port, vni, srcs, dsts, _, udp_csum, flags, df, _ = req[-1]
    assert port == "6784" and int(vni) == abi.vni(1, 2)
    assert srcs.split(",") == [lab.host_ip(1), lab.container_ip(1, 1)]
    assert dsts.split(",") == [lab.host_ip(2), lab.container_ip(2, 1)]
    assert int(udp_csum, 0) == 0 and int(flags, 0) == 0x0800 and df.split(",")[0] in ("1", "True")
    replies = [r for r in rows if r[4] == "0"]
    assert replies and int(replies[-1][1]) == abi.vni(2, 1)


def test_reset_removes_the_underlay_hook(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1, direct=True)
    fl.close()
    ns = lab.host_ns(1)
    assert hooks.devices_with_program(PROG_FROM_UNDERLAY, netns=ns) == ["eth0"]
    reset_host(netns=ns)
    assert hooks.devices_with_program(PROG_FROM_UNDERLAY, netns=ns) == []
