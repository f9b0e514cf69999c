"""Who may send what: forged frames from the underlay or from a container never arrive.

From the underlay: a stranger namespace on the lab underlay (192.0.2.66, not in
the mesh) sends VXLAN on UDP 6784 and sleeve datagrams on UDP 6783 built by
hand, from its own address and with the outer source forged to a peer's. From a
container: raw frames on its ethwe that impersonate another container, or
20,000 ARP requests from invented source MACs to fill every MAC table. The
assertions are what a UDP socket in the target container receives (nothing
forged; the genuine control datagram, yes), the named drop counters, and that
attach and ping still work afterwards. The unencrypted tests share one 3-host
world (built once: a lab with routers costs tens of seconds).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.netns.attack_helpers import (Listener, Stranger, arp, container_mac, drops, report,
                                        send_frames_from_container, short_id, udp_frame, vxlan, wait_for)
from tests.netns.conftest import unique_prefix
from weave_fdp.lab.lab import Lab, lab_namespaces
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.sleeve import wire
from weave_fdp.lab.lab import weave_command

pytestmark = pytest.mark.timeout(240)

PORT = 5555
BROADCAST = "10.47.255.255"      # of the containers' 10.32.0.0/12


def cli(lab, i, *args, check=True):
    return lab.exec(i, [*weave_command(), *args], check=check)


def connections(lab, i) -> list[dict]:
    try:
        return json.loads(cli(lab, i, "status", "connections", "--json", check=False).stdout)
    except ValueError:
        return []


def mesh(make_lab, hosts: int, *args: str, mode: str):
    """``hosts`` hosts, full mesh, one attached container each; every connection in ``mode``."""
    return start(make_lab(hosts=hosts, topology="full"), hosts, *args, mode=mode)


@pytest.fixture(scope="module")
def world() -> Iterator[Lab]:
    """3 hosts, no password, one attached container each, every connection on fastdp."""
    lab = Lab(prefix=unique_prefix(), hosts=3, topology="full")
    try:
        lab.up()
        yield start(lab, 3, mode="fastdp")
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)


def start(lab, hosts: int, *args: str, mode: str):
    for i in range(1, hosts + 1):
        lab.add_container(i)
    lab.launch_routers(list(args))
    for i in range(1, hosts + 1):
        cli(lab, i, "attach", lab.container_cidr(i, 1), f"netns:{lab.container_ns(i, 1)}")
    for i in range(1, hosts + 1):
        wait_for(lambda: (len(c := connections(lab, i)) == hosts - 1 and all(x.get("mode") == mode for x in c)),
                 60, f"h{i}'s connections in {mode}")
    return lab


def legit(lab, src: int, dst: int, payload: str, src_container: int = 1) -> None:
    """A genuine datagram from container (src, src_container) to container (dst, 1)."""
    code = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
            "s.sendto(sys.argv[2].encode(),(sys.argv[1],%d))" % PORT)
    lab.exec_container(src, src_container, ["python3", "-c", code, lab.container_ip(dst, 1), payload])


def forged(lab, src: int, dst: int, payload: str, *, dst_ip: str | None = None,
           dst_mac: str | None = None) -> bytes:
    """The frame container (src, 1) would send to (dst, 1), built by hand."""
    return udp_frame(dst_mac or container_mac(lab, dst), container_mac(lab, src), lab.container_ip(src, 1),
                     dst_ip or lab.container_ip(dst, 1), PORT, payload.encode())


def grew(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def test_password_plain_vxlan_never_reaches_a_container(make_lab) -> None:
    """--password: every connection is sealed sleeve; plain VXLAN naming h2 is refused,
    from the stranger's own address and with h2's address forged."""
    lab = mesh(make_lab, 2, "--password", "s3cret", mode="sleeve")
    x = Stranger(lab)
    try:
        vni = abi.vni(short_id(lab, 2), short_id(lab, 1))
        listener = Listener(lab, 1, 1, PORT, "legit")
        before = drops(lab, 1)
        x.send_udp(lab.host_ip(1), abi.VXLAN_PORT, [vxlan(vni, forged(lab, 2, 1, f"own{k}")) for k in range(10)])
        x.send_spoofed(lab.host_ip(2), lab.host_ip(1), abi.VXLAN_PORT,
                       [vxlan(vni, forged(lab, 2, 1, f"spoof{k}")) for k in range(10)])
        legit(lab, 2, 1, "legit")
        got = listener.stop()
        assert got == ["legit"], got
        after = wait_for(lambda: (d := drops(lab, 1)) and grew(before, d, "sealed-peer") >= 10 and d, 20,
                         "h1 to count the forged frames")
        assert grew(before, after, "unknown-source") >= 10, after
        assert grew(before, after, "sealed-peer") >= 10, after
    finally:
        x.close()


def test_forged_vxlan_and_sleeve_frames_are_refused_and_counted(world) -> None:
    lab = world
    x = Stranger(lab)
    try:
        s1, s2, s3 = (short_id(lab, i) for i in (1, 2, 3))
        h1_listener, h3_listener = Listener(lab, 1, 1, PORT, "legit1"), Listener(lab, 3, 1, PORT, "legit3")
        before1 = drops(lab, 1)
        to1 = lab.host_ip(1)
        # from the stranger's own address: unicast h2 -> h1, a relay h2 -> h3 through h1,
        # a flood of h2 (broadcast UDP)
        x.send_udp(to1, abi.VXLAN_PORT,
                   [vxlan(abi.vni(s2, s1), forged(lab, 2, 1, "uni")),
                    vxlan(abi.vni(s2, s3), forged(lab, 2, 3, "relay")),
                    vxlan(abi.vni(s2, s2), forged(lab, 2, 1, "flood", dst_ip=BROADCAST,
                                                  dst_mac="ff:ff:ff:ff:ff:ff"))] * 5)
        # with h3's address forged, claiming h2 (a direct neighbour of h1: only h2 may)
        x.send_spoofed(lab.host_ip(3), to1, abi.VXLAN_PORT, [vxlan(abi.vni(s2, s1), forged(lab, 2, 1, "wrong"))] * 5)
        # garbage on UDP 6784
        x.send_udp(to1, abi.VXLAN_PORT, [b"hello", bytes(20), b"\x08" + bytes(7)] * 3)
        # an unsealed sleeve datagram claiming to come from h2
        names = {i: wire.name_to_bytes(report(lab, i)["router"]["name"]) for i in (1, 2)}
        sleeve = (wire.encode_header(names[2]) + bytes([wire.T_FRAMES])
                  + wire.encode_entry(names[2], names[1], frame := forged(lab, 2, 1, "sleeve")) + frame)
        x.send_udp(to1, wire.PORT, [sleeve] * 5)
        legit(lab, 2, 1, "legit1")
        legit(lab, 2, 3, "legit3")
        got1, got3 = h1_listener.stop(), h3_listener.stop()
        assert got1 == ["legit1"], got1
        assert got3 == ["legit3"], got3      # the forged relay never left h1

        def counted():
            d = drops(lab, 1)
            return d if (grew(before1, d, "unknown-source") >= 15 and grew(before1, d, "wrong-source") >= 5
                         and grew(before1, d, "bad-vxlan") >= 9
                         and grew(before1, d, "sleeve-wrong-source") >= 5) else None
        wait_for(counted, 20, "h1 to count every forged packet")
    finally:
        x.close()
    # h2's container MAC still lives on h2 for h1: the pair keeps working
    assert lab.exec_container(1, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", lab.container_ip(2, 1)],
                              check=False).returncode == 0


# ------------------------------------------------------------------ from a container

def entries(lab, i) -> dict[str, int]:
    return report(lab, i)["datapath"]["entries"]


def new_container(lab, i: int) -> int:
    lab.add_container(i)
    return lab.containers(i)


def test_a_container_cannot_impersonate_another(world) -> None:
    lab = world
    j = new_container(lab, 1)
    cli(lab, 1, "attach", lab.container_cidr(1, j), f"netns:{lab.container_ns(1, j)}")
    victim_mac, victim_ip = container_mac(lab, 1, 1), lab.container_ip(1, 1)
    me = container_mac(lab, 1, j)
    target_mac, target_ip = container_mac(lab, 2, 1), lab.container_ip(2, 1)
    listener = Listener(lab, 2, 1, PORT, "legit")
    before = drops(lab, 1)
    send_frames_from_container(lab, 1, j, [
        udp_frame(target_mac, victim_mac, victim_ip, target_ip, PORT, b"mac-and-ip"),   # all of the victim's
        udp_frame(target_mac, me, victim_ip, target_ip, PORT, b"ip"),                  # the victim's address
        arp(2, me, victim_ip, "ff:ff:ff:ff:ff:ff", victim_ip),                         # gratuitous ARP for it
        arp(1, victim_mac, victim_ip, "00:00:00:00:00:00", target_ip, src=me),         # ARP naming its MAC
    ] * 5)
    legit(lab, 1, 2, "legit", src_container=j)     # the attacker -> container 1 of h2, as itself
    got = listener.stop()
    assert got == ["legit"], got
    after = wait_for(lambda: d if grew(before, (d := drops(lab, 1)), "spoofed-arp") >= 10 else None, 20,
                     "h1 to count the spoofed frames")
    assert grew(before, after, "spoofed-mac") >= 5 and grew(before, after, "spoofed-ip") >= 5, after
    # nobody was taught the victim's address at the attacker's MAC, and the victim still talks
    neigh = lab.exec_container(2, 1, ["ip", "neigh", "show", victim_ip]).stdout
    assert me not in neigh, neigh
    assert lab.exec_container(2, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", victim_ip],
                              check=False).returncode == 0


def test_a_mac_flood_fills_no_table_and_attach_still_works(world) -> None:
    lab = world
    my_ip = lab.container_ip(1, 1)
    n = 20000
    frames = [arp(1, mac, my_ip, "00:00:00:00:00:00", "10.32.9.9")
              for mac in ("06:%02x:%02x:%02x:00:01" % (i >> 16, i >> 8 & 0xFF, i & 0xFF) for i in range(n))]
    before = drops(lab, 1)
    for k in range(0, n, 2000):
        send_frames_from_container(lab, 1, 1, frames[k:k + 2000])
    after = wait_for(lambda: d if grew(before, (d := drops(lab, 1)), "spoofed-mac") >= n else None, 30,
                     "h1 to count the flood")
    assert grew(before, after, "spoofed-mac") >= n
    assert entries(lab, 2)["learned_macs"] < 10, entries(lab, 2)
    # attach on h2 still works, and the new container reaches h1's
    j = new_container(lab, 2)
    r = cli(lab, 2, "attach", lab.container_cidr(2, j), f"netns:{lab.container_ns(2, j)}", check=False)
    assert r.returncode == 0, r.stderr
    assert lab.exec_container(2, j, ["ping", "-c", "3", "-i", "0.2", "-W", "2", my_ip],
                              check=False).returncode == 0


def test_a_failed_attach_rolls_back_completely(world) -> None:
    """More addresses than a container's guard holds: exit code 1, a clear error, nothing left."""
    lab = world
    j = new_container(lab, 2)
    before = entries(lab, 2)
    attached = len(json.loads(cli(lab, 2, "ps", "--json").stdout))
    links = lab.exec(2, ["ip", "-o", "link"]).stdout.count("vethwepl")
    cidrs = [f"10.32.2.{100 + k}/12" for k in range(abi.MAX_PORT_IPS + 1)]
    r = cli(lab, 2, "attach", *cidrs, f"netns:{lab.container_ns(2, j)}", check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and f"at most {abi.MAX_PORT_IPS}" in r.stderr, r.stderr
    assert "ethwe" not in subprocess.run(["ip", "-n", lab.container_ns(2, j), "-o", "link"], capture_output=True,
                                         text=True).stdout
    assert lab.exec(2, ["ip", "-o", "link"]).stdout.count("vethwepl") == links
    assert entries(lab, 2) == before
    assert len(json.loads(cli(lab, 2, "ps", "--json").stdout)) == attached
    # and the same container attaches fine with fewer addresses
    r = cli(lab, 2, "attach", *cidrs[:2], f"netns:{lab.container_ns(2, j)}", check=False)
    assert r.returncode == 0, r.stderr
