"""Attach/detach cycles of a container while another pair of containers exchanges traffic:
links, tc filters, BPF map entries, the router's fds and threads come back to where they
started, RSS stays within noise, and the untouched traffic loses nothing."""

from __future__ import annotations

import os
import time

import pytest

from tests.chaos.chaoslab import leaks
from tests.chaos.report import Row, record

pytestmark = pytest.mark.timeout(900)

CYCLES = int(os.environ.get("CHAOS_CYCLES", "100"))
RSS_NOISE_KB = 16 * 1024


def churn(cl, cycles: int) -> None:
    cl.lab.add_container(1)
    ns = cl.lab.container_ns(1, 2)
    cidr = "10.32.1.200/12"
    cl.cli(1, "attach", cidr, f"netns:{ns}")      # warm-up: first attach loads what later ones reuse
    cl.cli(1, "detach", f"netns:{ns}")
    before = cl.resources(1)
    ping = cl.ping(1, 2)
    t0 = time.monotonic()
    for _ in range(cycles):
        cl.cli(1, "attach", cidr, f"netns:{ns}")
        cl.cli(1, "detach", f"netns:{ns}")
    took = time.monotonic() - t0
    sent, lost, outage = ping.stop()
    after = cl.resources(1)
    leaked = leaks(before, after, {"fds": 4, "threads": 2})
    rss_growth = after.get("rss_kb", 0) - before.get("rss_kb", 0)
    if rss_growth > RSS_NOISE_KB:
        leaked = ", ".join(filter(None, [leaked, f"rss_kb {before['rss_kb']}->{after['rss_kb']}"]))
    record(Row("attach/detach churn", f"{cycles} attach+detach cycles on h1 under traffic", faults=cycles,
               sent=sent, lost=lost, outage_s=outage, recovery_s=None, leaks=leaked or "none",
               result="ok" if not leaked and lost <= 2 else "FAIL",
               notes=[f"{took / cycles:.2f} s per cycle; resources before {before}, after {after}"]))
    assert not leaked, leaked
    assert lost <= 2, f"the untouched containers lost {lost} of {sent} probes"


def test_attach_detach_cycles_under_traffic(chaos_lab) -> None:
    churn(chaos_lab(2), CYCLES)
