"""A router restart does not blackhole traffic toward its host, in either direction.

kill -9 of h2's router under a 10 ms ping each way between the containers of h1
and h2, relaunched 2 s later: the pinned datapath of h2 keeps forwarding, and h1
keeps h2's fastdp entries while h2's kernel answers its fastdp heartbeats (or for
a grace period), so both pings lose under 1%.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.netns.attack_helpers import wait_for
from tests.netns.test_fastdp_router import attached_pair, cli, router_pid

pytestmark = pytest.mark.timeout(180)


def _loss(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_peer_router_kill_and_relaunch_loses_under_one_percent(make_lab) -> None:
    lab = attached_pair(make_lab)
    wait_for(lambda: all(c.get("mode") == "fastdp" for c in json.loads(
        cli(lab, 2, "status", "connections", "--json").stdout) or [{}]), 30, "h2's connection in fastdp")
    pings = {(a, b): lab.popen_container(a, 1, ["ping", "-i", "0.01", "-c", "900", "-W", "1",
                                                lab.container_ip(b, 1)], stdout=subprocess.PIPE, text=True)
             for a, b in ((1, 2), (2, 1))}
    time.sleep(1.0)
    os.kill(router_pid(lab, 2), signal.SIGKILL)
    time.sleep(2.0)
    cli(lab, 2, "launch", "--nickname", "h2", lab.host_ip(1))
    results = {k: _loss(p.communicate(timeout=60)[0]) for k, p in pings.items()}
    drops = json.loads(cli(lab, 1, "report").stdout).get("datapath", {}).get("drops", {})
    for (a, b), (sent, got) in results.items():
        assert (sent - got) / sent < 0.01, f"c{a} -> c{b}: {sent - got} of {sent} lost; h1 drops {drops}"
