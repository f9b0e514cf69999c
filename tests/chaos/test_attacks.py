"""The control-plane attacks of the security tests again, now while faults are injected: h3
holds 64 silent connections to h1's control port (reopened as soon as h1 closes them) while
the underlay drops 5 % of frames and h2's router is killed and relaunched. h2 must rejoin
(the mesh whole again, fastdp, containers attached), h1's memory stays bounded, and the
attacker's failures show as one aggregated row."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos.report import Row, record

pytestmark = pytest.mark.timeout(600)

ATTACK = str(Path(__file__).resolve().parents[1] / "netns" / "mesh_attack.py")


def test_silent_connection_flood_during_loss_and_restart(chaos_lab) -> None:
    if not Path(ATTACK).exists():
        pytest.skip("tests/netns/mesh_attack.py is not there")
    cl = chaos_lab(3)
    rss0 = cl.resources(1)["rss_kb"]
    attack = cl.lab.popen(3, [sys.executable, ATTACK, "silent", cl.lab.host_ip(1), "64", "90"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert attack.stdout.readline().startswith("holding")
        cl.set_loss(5)
        ping = cl.ping(1, 2)
        cl.kill9(2)
        t0 = time.time()
        cl.launch(2)
        cl.wait_converged(120, hosts=[1, 2], modes=("fastdp", "sleeve"))
        rejoin = round(time.time() - t0, 2)
        rss_peak = cl.resources(1)["rss_kb"]
    finally:
        cl.clear_loss()
        attack.kill()
        attack.wait(10)
    sent, lost, outage = ping.stop()
    t1 = time.time()
    cl.wait_converged(90)
    recovery = round(time.time() - t1, 2)
    grown = (rss_peak - rss0) // 1024
    record(Row("attacks under faults", "64 silent connections to h1 + 5 % loss + h2 router kill -9/relaunch",
               faults=3, sent=sent, lost=lost, outage_s=outage, recovery_s=recovery, leaks="-",
               result="ok" if grown < 64 else "FAIL",
               notes=[f"h2 rejoined h1 through the attack and the loss after {rejoin} s; h1 RSS "
                      f"{rss0 // 1024} -> {rss_peak // 1024} MiB"]))
    assert grown < 64, f"h1 grew {grown} MiB under the attack"
    assert cl.ping_ok(1, 2) and cl.ping_ok(2, 1)
