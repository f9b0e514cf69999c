"""Who may send what over the underlay: forged VXLAN and sleeve frames never reach a container.

A stranger namespace on the lab underlay (192.0.2.66, not in the mesh) sends
VXLAN on UDP 6784 and sleeve datagrams on UDP 6783 built by hand: from its own
address, and with the outer source forged to a peer's. The assertions are what
a UDP socket in the target container receives (nothing forged; the legitimate
control frame, yes) and the named drop counters of the receiving host.
"""

from __future__ import annotations

import json

import pytest

from tests.netns.attack_helpers import (Listener, Stranger, container_mac, drops, report, short_id, udp_frame,
                                        vxlan, wait_for)
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
    lab = make_lab(hosts=hosts, topology="full")
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


def test_forged_vxlan_and_sleeve_frames_are_refused_and_counted(make_lab) -> None:
    lab = mesh(make_lab, 3, mode="fastdp")
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
                         and grew(before1, d, "sleeve: wrong source address") >= 5) else None
        wait_for(counted, 20, "h1 to count every forged packet")
    finally:
        x.close()
    # h2's container MAC still lives on h2 for h1: the pair keeps working
    assert lab.exec_container(1, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", lab.container_ip(2, 1)],
                              check=False).returncode == 0
