"""MAC ageing on real hosts: a remote container's MAC learned by h1 stays while it talks,
ages out after the ageing time once it is quiet, and traffic still flows afterwards
(flooded once, learned again). Ageing time 2 s so the test takes seconds."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.netns.fastdp_helpers import FastdpLab
from weave_fdp.datapath.fastdp import abi

pytestmark = pytest.mark.timeout(120)
AGEING_S = 2.0


@pytest.fixture
def two(make_lab):
    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1, direct=True)
    for hd in fl.hosts.values():
        hd.mac_ageing_s = AGEING_S
    # Only the test's own frames may refresh entries: no IPv6 (router solicitations, MLD
    # reports every few seconds) and no ARP (permanent neighbours) from the containers.
    macs = {i: next(iter(fl.hosts[i].ports.values())) for i in (1, 2)}
    for i in (1, 2):
        k = 3 - i
        lab.exec_container(i, 1, ["sysctl", "-qw", "net.ipv6.conf.ethwe.disable_ipv6=1"])
        lab.exec_container(i, 1, ["ip", "neigh", "replace", lab.container_ip(k, 1), "lladdr", macs[k],
                                  "dev", "ethwe", "nud", "permanent"])
    yield fl
    fl.close()


def learned_on(fl: FastdpLab, i: int) -> dict[str, int]:
    """Learned MAC -> peer short ID in host i's table."""
    assert fl.hosts[i].dp is not None
    macs = fl.hosts[i].dp.maps["fdp_learned"]
    out = {}
    for e in fl.hosts[i].dp.mac_entries():
        v = macs.get(abi.mac_key(e.mac))
        if v is not None and e.flags & abi.MacFlags.LEARNED:
            out[e.mac] = v.peer
    return out


def test_active_mac_stays_idle_mac_ages_out_and_is_learned_again(two: FastdpLab) -> None:
    lab = two.lab
    dst = lab.container_ip(2, 1)
    (remote_mac,) = two.hosts[2].ports.values()
    assert two.ping((1, 1), dst, count=2, interval=0.1).returncode == 0
    assert learned_on(two, 1).get(remote_mac) == 2
    # talking for longer than the ageing time, with sweeps meanwhile: the entry stays
    p = lab.popen_container(1, 1, ["ping", "-q", "-i", "0.2", "-w", str(int(AGEING_S) + 2), dst],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + AGEING_S + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert remote_mac not in two.hosts[1].age_macs()
        assert p.poll() is None, "the background ping ended early"
    finally:
        p.wait(10)
    assert learned_on(two, 1).get(remote_mac) == 2
    # quiet for longer than the ageing time: the sweep removes it, local entries stay
    time.sleep(AGEING_S + 0.3)
    assert remote_mac in two.hosts[1].age_macs()
    assert remote_mac not in learned_on(two, 1)
    assert two.hosts[1].map_entries()["local_macs"] == 1
    # the next frame to it is flooded, the reply learns it again
    assert two.ping((1, 1), dst, count=2, interval=0.1).returncode == 0
    assert learned_on(two, 1).get(remote_mac) == 2
