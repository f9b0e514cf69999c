"""Fastdp <-> sleeve failover through the overlay switch (needs the fastdp overlay).

Block UDP 6784 between h1 and h2 while a ping runs: sleeve within 3 s; unblock:
back to fastdp within 15 s; loss reported. h3 runs --no-fastdp: "peer has no fastdp".
"""

from __future__ import annotations

import importlib
import json
import re
import time

import pytest

from weave_fdp.lab.lab import weave_command
from weave_fdp.plumbing import links


def _fastdp_offers_switch() -> bool:
    try:
        mod = importlib.import_module("weave_fdp.router.overlay.fastdp")
    except Exception:
        return False
    src = open(mod.__file__).read()
    return "offer_fastdp" in src


pytestmark = pytest.mark.skipif(not _fastdp_offers_switch(),
                                reason="the fastdp overlay does not offer the switch its control yet "
                                       "(weave_fdp.router.overlay.switch.offer_fastdp)")


def mode(lab, i: int, peer_nick: str) -> tuple[str | None, str | None]:
    out = lab.exec(i, [*weave_command(), "status", "connections", "--json"], check=False).stdout
    try:
        for c in json.loads(out):
            if c.get("nickname") == peer_nick and c.get("state") == "established":
                return c.get("mode"), c.get("mode_reason")
    except ValueError:
        pass
    return None, None


def wait_mode(lab, i: int, nick: str, want: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if mode(lab, i, nick)[0] == want:
            return time.monotonic() - t0
        time.sleep(0.1)
    pytest.fail(f"h{i} -> {nick}: not {want} within {timeout} s (now {mode(lab, i, nick)})")


def test_failover_to_sleeve_and_back_with_loss_reported(make_lab) -> None:
    lab = make_lab(hosts=3, topology="full")
    for i in (1, 2, 3):
        lab.add_container(i)
        cns = lab.container_ns(i, 1)
        links.create_bridge("weave", netns=lab.host_ns(i))
        links.create_veth("vethwepl1", "ethwe", netns=lab.host_ns(i), peer_netns=cns, mtu=1376)
        links.set_master("vethwepl1", "weave", lab.host_ns(i))
        links.add_address("ethwe", f"10.32.{i}.1/12", cns)
    for i in (1, 2, 3):
        extra = ["--no-fastdp"] if i == 3 else []
        lab.exec(i, [*weave_command(), "launch", "--nickname", f"h{i}",
                     *[lab.host_ip(n) for n in lab.neighbours(i)], *extra], timeout=30)
    wait_mode(lab, 1, "h2", "fastdp", 20)
    assert wait_mode(lab, 1, "h3", "sleeve", 10) >= 0
    assert mode(lab, 1, "h3")[1] == "peer has no fastdp"
    for dst in ("10.32.2.1", "10.32.3.1"):
        lab.exec_container(1, 1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", dst])

    ping = lab.popen_container(1, 1, ["ping", "-i", "0.1", "-W", "1", "10.32.2.1"],
                               stdout=__import__("subprocess").PIPE, text=True)
    time.sleep(1)
    lab.block_udp_port(1, 2, 6784)
    t_fail = wait_mode(lab, 1, "h2", "sleeve", 3.0)
    assert mode(lab, 1, "h2")[1] == "fastdp heartbeats lost"
    time.sleep(1)
    lab.unblock_udp_port(1, 2, 6784)
    t_back = wait_mode(lab, 1, "h2", "fastdp", 15.0)
    time.sleep(1)
    ping.send_signal(2)
    out = ping.communicate(timeout=5)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = map(int, m.groups())
    print(f"failover {t_fail:.2f} s, return {t_back:.2f} s, ping loss {sent - got}/{sent}")
    assert got >= sent * 0.7
