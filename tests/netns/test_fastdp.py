"""fastdp between real namespaces, with a static plan applied directly (no router)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.netns.fastdp_helpers import FastdpLab, vxlan_fields

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two(make_lab):
    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1)
    yield fl
    fl.close()


def test_two_hosts_ping_tcp_udp_mtu(two: FastdpLab) -> None:
    lab = two.lab
    dst = lab.container_ip(2, 1)
    assert two.ping((1, 1), dst, count=3).returncode == 0, "cold-start ping (ARP included) failed"
    # MTU: underlay 1500 - 50 on ethwe; a full-size DF packet crosses, one byte more is refused locally
    assert two.ping((1, 1), dst, count=1, extra=["-M", "do", "-s", str(1450 - 28)]).returncode == 0
    big = two.ping((1, 1), dst, count=1, extra=["-M", "do", "-s", str(1450 - 27)])
    assert big.returncode != 0
    tcp = two.iperf3((1, 1), (2, 1))["end"]["sum_received"]["bits_per_second"]
    assert tcp > 50e6, f"TCP only {tcp / 1e6:.0f} Mbit/s"
    end = two.iperf3((1, 1), (2, 1), "-u", "-b", "50M")["end"]["sum"]
    assert end["packets"] > 1000 and end["lost_percent"] < 5
    rep = two.hosts[1].report()
    tx = [f for f in rep["flows"] if f["dst_ip"] == dst and f["dir"] == "tx" and f["path"] == "fastdp"]
    assert tx and sum(f["packets"] for f in tx) > 1000
    peers = {p["peer"]: p for p in rep["peers"]}
    assert peers["h2"]["tx_packets"] > 1000 and peers["h2"]["rx_packets"] > 0


def test_broadcast_and_multicast_reach_every_container_once(two: FastdpLab) -> None:
    lab = two.lab
    two.add_container(2)
    # arping: the request is a broadcast crossing the overlay; replies come back unicast
    cp = lab.exec_container(1, 1, ["arping", "-c", "2", "-w", "3", "-I", "ethwe", lab.container_ip(2, 2)],
                            check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    recv = ("import socket,struct,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "s.bind(('',5555));s.setsockopt(socket.IPPROTO_IP,socket.IP_ADD_MEMBERSHIP,"
            "struct.pack('4s4s',socket.inet_aton('239.1.2.3'),socket.inet_aton('0.0.0.0')))\n"
            "s.settimeout(4);n=0\n"
            "try:\n  while True: s.recv(100); n+=1\nexcept Exception: pass\nprint(n)\n")
    rx = [lab.popen_container(2, j, ["python3", "-c", recv], stdout=subprocess.PIPE, text=True) for j in (1, 2)]
    time.sleep(0.5)
    send = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,2)\n"
            "for i in range(5): s.sendto(b'hi',('239.1.2.3',5555)); time.sleep(0.05)\n")
    lab.exec_container(1, 1, ["python3", "-c", send])
    counts = [int(p.communicate(timeout=10)[0].strip()) for p in rx]
    assert counts == [5, 5], f"multicast copies per container: {counts}"


def test_wire_is_vxlan_with_the_right_vni(two: FastdpLab) -> None:
    lab = two.lab
    rows = vxlan_fields(lab, 2, ["udp.dstport", "vxlan.vni", "ip.src", "ip.dst", "icmp.type"],
                        lambda: two.ping((1, 1), lab.container_ip(2, 1), count=4, interval=0.2))
    assert rows, "tshark captured no VXLAN packet"
    vni_1_to_2 = 1 | 2 << 12
    req = [r for r in rows if r[4] == "8"]
    assert req, rows
    port, vni, srcs, dsts, _ = req[0]
    assert port == "6784" and int(vni) == vni_1_to_2
    assert srcs.split(",") == [lab.host_ip(1), lab.container_ip(1, 1)]
    assert dsts.split(",") == [lab.host_ip(2), lab.container_ip(2, 1)]


def test_different_subnets_stay_isolated(two: FastdpLab) -> None:
    lab = two.lab
    j = two.add_container(2, cidr="10.33.0.2/16")
    assert two.ping((1, 1), "10.33.0.2", count=1).returncode != 0
    assert lab.exec_container(2, j, ["ping", "-c", "1", "-W", "1", lab.container_ip(1, 1)],
                              check=False).returncode != 0


def test_line_relays_in_the_kernel(make_lab) -> None:
    lab = make_lab(hosts=3, topology="line")
    fl = FastdpLab(lab, containers=1)
    try:
        # the underlay really blocks h1 <-> h3
        assert lab.exec(1, ["ping", "-c", "1", "-W", "1", lab.host_ip(3)], check=False).returncode != 0
        # floods the containers sent while the hosts were still being configured one by
        # one may have been dropped (no-config, unknown-peer): count only the pings' own
        drops_before = fl.hosts[2].report()["drops"]
        assert fl.ping((1, 1), lab.container_ip(3, 1), count=3).returncode == 0
        relayed = [f for f in fl.hosts[2].report()["flows"] if f["dir"] == "relay" and f["path"] == "fastdp"]
        assert relayed and sum(f["packets"] for f in relayed) >= 3
        assert fl.hosts[2].report()["drops"] == drops_before
    finally:
        fl.close()


def test_more_containers_than_one_byte_of_ports(make_lab) -> None:
    """A host with 70 containers (beyond the 63 an earlier layout held): a broadcast from
    another host reaches the last of them through the kernel's local flood, and unicast
    follows; the first container still answers."""
    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1)
    try:
        for _ in range(69):
            fl.add_container(2)
        assert lab.containers(2) == 70
        last = lab.container_ip(2, 70)
        cp = lab.exec_container(1, 1, ["arping", "-c", "2", "-w", "5", "-I", "ethwe", last], check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        for j in (70, 64, 1):
            assert fl.ping((1, 1), lab.container_ip(2, j), count=2).returncode == 0, f"h2-c{j} unreachable"
        rep = fl.hosts[2].report()
        assert sum(f["packets"] for f in rep["flows"] if f["dst_ip"] == last and f["path"] == "fastdp") > 0
    finally:
        fl.close()
