"""A peer whose wall clock is an hour off (libfaketime preloaded under its router; it shifts
the process's monotonic clock by the same hour, since libfaketime 0.9.10 fails every sleep
with EINVAL when told to leave the monotonic clock alone). The mesh, fastdp
and the containers' traffic work; and when that peer restarts with its clock corrected, its
new incarnation (ordered by wall-clock start time) is an hour *older* than the one the
others hold: they must still take it (new UID seen, routes and fastdp back)."""

from __future__ import annotations

import os
import time

import pytest

from tests.chaos.chaoslab import Timeout, wait_until
from tests.chaos.report import Row, record

pytestmark = pytest.mark.timeout(400)

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def skewed(offset: str) -> dict[str, str]:
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset}


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_peer_with_clock_an_hour_off(chaos_lab, offset: str) -> None:
    if not os.path.exists(LIBFAKETIME):
        pytest.skip("libfaketime missing (apt-get install faketime; scripts/install.sh does)")
    cl = chaos_lab(2, env={2: skewed(offset)})
    assert cl.ping_ok(1, 2) and cl.ping_ok(2, 1)
    uid_skewed = {p["nickname"]: p for p in cl.report(1)["peers"]}["h2"]["uid"]
    # restart h2 with the right clock: its incarnation goes back (+1h) or forward (-1h) an hour
    ping = cl.ping(1, 2)
    cl.kill9(2)
    cl.env.pop(2)
    t0 = time.time()
    cl.launch(2)
    notes = [f"h2 router ran with FAKETIME={offset}"]
    try:
        cl.wait_converged(90)
        took_new = lambda: {p["nickname"]: p for p in cl.report(1)["peers"]}["h2"]["uid"] != uid_skewed  # noqa: E731
        wait_until(took_new, 30, "h1 to take h2's new incarnation")
        ok = True
    except Timeout as exc:
        ok = False
        notes.append(str(exc)[:300])
    recovery = round(time.time() - t0, 2)
    sent, lost, outage = ping.stop()
    record(Row("clock skew", f"h2 wall clock {offset}, then restarted with the right clock", sent=sent,
               lost=lost, outage_s=outage, recovery_s=recovery, leaks="-", result="ok" if ok else "FAIL",
               notes=notes))
    assert ok, notes[-1]
    assert cl.ping_ok(1, 2) and cl.ping_ok(2, 1)
