"""What a hostile container can do to the datapath: nothing beyond its own addresses.

A container sends raw frames (AF_PACKET on its ethwe, bytes built by hand) that
impersonate another container, or 20,000 ARP requests from distinct source MACs
to fill every host's MAC table. The assertions are what a UDP socket in the
target container receives, the named drop counters, and that attach and ping
still work everywhere afterwards.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.netns.attack_helpers import (Listener, arp, container_mac, drops, report, send_frames_from_container,
                                        udp_frame, wait_for)
from tests.netns.test_datapath_sources import PORT, cli, grew, legit, mesh
from weave_fdp.datapath.fastdp import abi

pytestmark = pytest.mark.timeout(240)


def entries(lab, i) -> dict[str, int]:
    return report(lab, i)["datapath"]["entries"]


def test_a_container_cannot_impersonate_another(make_lab) -> None:
    lab = mesh(make_lab, 2, mode="fastdp")
    lab.add_container(1)
    cli(lab, 1, "attach", lab.container_cidr(1, 2), f"netns:{lab.container_ns(1, 2)}")
    victim_mac, victim_ip = container_mac(lab, 1, 1), lab.container_ip(1, 1)
    me = container_mac(lab, 1, 2)
    target_mac, target_ip = container_mac(lab, 2, 1), lab.container_ip(2, 1)
    listener = Listener(lab, 2, 1, PORT, "legit")
    before = drops(lab, 1)
    send_frames_from_container(lab, 1, 2, [
        udp_frame(target_mac, victim_mac, victim_ip, target_ip, PORT, b"mac-and-ip"),   # all of the victim's
        udp_frame(target_mac, me, victim_ip, target_ip, PORT, b"ip"),                  # the victim's address
        arp(2, me, victim_ip, "ff:ff:ff:ff:ff:ff", victim_ip),                         # gratuitous ARP for it
        arp(1, victim_mac, victim_ip, "00:00:00:00:00:00", target_ip, src=me),         # ARP naming its MAC
    ] * 5)
    legit(lab, 1, 2, "legit", src_container=2)     # container 2 of h1 -> container 1 of h2, as itself
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


def test_a_mac_flood_fills_no_table_and_attach_still_works(make_lab) -> None:
    lab = mesh(make_lab, 2, mode="fastdp")
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
    lab.add_container(2)
    r = cli(lab, 2, "attach", lab.container_cidr(2, 2), f"netns:{lab.container_ns(2, 2)}", check=False)
    assert r.returncode == 0, r.stderr
    assert lab.exec_container(2, 2, ["ping", "-c", "3", "-i", "0.2", "-W", "2", my_ip],
                              check=False).returncode == 0


def test_a_failed_attach_rolls_back_completely(make_lab) -> None:
    """More addresses than a container's guard holds: exit code 1, a clear error, nothing left."""
    lab = mesh(make_lab, 2, mode="fastdp")
    lab.add_container(2)
    before = entries(lab, 2)
    links = lab.exec(2, ["ip", "-o", "link"]).stdout.count("vethwepl")
    cidrs = [f"10.32.2.{100 + k}/12" for k in range(abi.MAX_PORT_IPS + 1)]
    r = cli(lab, 2, "attach", *cidrs, f"netns:{lab.container_ns(2, 2)}", check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and f"at most {abi.MAX_PORT_IPS}" in r.stderr, r.stderr
    assert "ethwe" not in subprocess.run(["ip", "-n", lab.container_ns(2, 2), "-o", "link"], capture_output=True,
                                         text=True).stdout
    assert lab.exec(2, ["ip", "-o", "link"]).stdout.count("vethwepl") == links
    assert entries(lab, 2) == before
    assert len(json.loads(cli(lab, 2, "ps", "--json").stdout)) == 1
    # and the same container attaches fine with fewer addresses
    r = cli(lab, 2, "attach", *cidrs[:2], f"netns:{lab.container_ns(2, 2)}", check=False)
    assert r.returncode == 0, r.stderr
