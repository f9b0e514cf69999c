"""The bridge, the VXLAN device and the sleeve's capture port deleted under a running router
with traffic flowing: each comes back (the watchdogs), traffic resumes, and the outage and
the time to repair are printed."""

from __future__ import annotations

import time

import pytest

from tests.chaos.chaoslab import ChaosLab, leaks, wait_until
from tests.chaos.report import Row, record

pytestmark = pytest.mark.timeout(600)


def repairs(cl: ChaosLab, i: int) -> tuple[int, int]:
    ov = cl.report(i)["overlays"]
    return ov["fastdp"]["watchdog"]["repairs"], ov.get("sleeve", {}).get("port_repairs", 0)


def delete_under_traffic(cl: ChaosLab, dev: str) -> None:
    before_repairs = repairs(cl, 1)
    ping = cl.ping(1, 2)
    time.sleep(1)
    t0 = time.time()
    cl.lab.exec(1, ["ip", "link", "del", dev])
    repaired = wait_until(lambda: repairs(cl, 1) != before_repairs, 30, f"h1 to repair after {dev} was deleted")
    cl.wait_converged(60)
    recovery = round(time.time() - t0, 2)
    time.sleep(1)
    sent, lost, outage = ping.stop()
    ok = cl.ping_ok(1, 2) and cl.ping_ok(2, 1)
    record(Row("device deleted", f"ip link del {dev} on h1 under traffic", sent=sent, lost=lost, outage_s=outage,
               recovery_s=recovery, leaks="-", result="ok" if ok else "FAIL",
               notes=[f"watchdog repair noticed after {repaired:.2f} s (fastdp, sleeve repairs "
                      f"{before_repairs} -> {repairs(cl, 1)})"]))
    assert ok, f"no traffic after {dev} was deleted and repaired"


def test_bridge_vxlan_and_sleeve_port_deleted_under_the_router(chaos_lab) -> None:
    cl = chaos_lab(2)
    before = cl.resources(1)
    for dev in ("vxlan-6784", "weave", "vethwe-pcap"):
        delete_under_traffic(cl, dev)
    after = cl.resources(1)
    leaked = leaks(before, after, {"fds": 8, "threads": 2})
    assert not leaked, leaked
