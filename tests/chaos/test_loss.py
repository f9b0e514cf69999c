"""Random loss on the underlay (nftables numgen: this kernel has no netem) of 1 %, 5 % and
20 %: iperf3 between containers still moves data, and a router restarted under that loss
gets back the whole mesh (gossip, handshakes and heartbeats all cross the lossy underlay).
Once the loss is cleared, fastdp carries traffic again."""

from __future__ import annotations

import json
import time

import pytest

from tests.chaos.chaoslab import ChaosLab
from tests.chaos.report import Row, record

pytestmark = pytest.mark.timeout(900)

IPERF_S = 3


def iperf(cl: ChaosLab) -> tuple[float, int]:
    """(Mbit/s, retransmits) of a short TCP iperf3 from h1's container to h2's."""
    srv = cl.lab.popen_container(2, 1, ["iperf3", "-s", "-1"])
    try:
        time.sleep(0.5)
        out = cl.lab.exec_container(1, 1, ["iperf3", "-c", cl.lab.container_ip(2, 1), "-t", str(IPERF_S), "-J",
                                           "--connect-timeout", "5000"], check=False, timeout=IPERF_S + 60).stdout
    finally:
        srv.kill()
        srv.wait()
    try:
        end = json.loads(out)["end"]
    except (ValueError, KeyError):
        return 0.0, 0
    return round(end["sum_received"]["bits_per_second"] / 1e6, 1), int(end["sum_sent"].get("retransmits", 0))


@pytest.mark.parametrize("percent", [1, 5, 20])
def test_underlay_loss_during_iperf_and_gossip(chaos_lab, percent: int) -> None:
    cl = chaos_lab(2)
    clean_mbps, _ = iperf(cl)
    cl.set_loss(percent)
    try:
        ping = cl.ping(1, 2, interval=0.05)
        mbps, retr = iperf(cl)
        # gossip under loss: h2's router restarts and must find the mesh again through it
        cl.kill9(2)
        t0 = time.time()
        cl.launch(2)
        cl.wait_converged(180, modes=("fastdp", "sleeve"))
        under_loss = round(time.time() - t0, 2)
        sent, lost, outage = ping.stop()
    finally:
        cl.clear_loss()
    t1 = time.time()
    cl.wait_converged(90)
    recovery = round(time.time() - t1, 2)
    record(Row("underlay loss", f"{percent} % random loss (numgen), iperf3 {IPERF_S} s + h2 router restart",
               sent=sent, lost=lost, outage_s=outage, recovery_s=recovery, leaks="-",
               result="ok" if mbps > 0 else "FAIL",
               notes=[f"iperf3 {mbps} Mbit/s ({retr} retransmits) against {clean_mbps} Mbit/s without loss",
                      f"h2 relaunched under the loss saw the whole mesh after {under_loss} s",
                      f"probe loss {100 * lost / max(1, sent):.1f} % (a round trip crosses the underlay twice)"]))
    assert mbps > 0, "iperf3 moved nothing"
