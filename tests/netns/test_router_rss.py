"""Idle cost of a router with fastdp + sleeve: no bcc/LLVM in its process, RSS under 60 MB.

The programs are compiled by a short-lived child (``fastdp.compile``); the router
opens the pinned programs and maps with raw bpf() calls. This test launches real
routers in a 2-host lab, checks /proc/<pid>/maps and VmRSS of each, and that the
fast path still carries a ping after attach.
"""

from __future__ import annotations

import time

import pytest

from tests.netns.test_fastdp_router import cli, router_pid, wait_fastdp

pytestmark = pytest.mark.timeout(120)

RSS_LIMIT_KB = 60 * 1024


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status (VmRSS, RssAnon, RssFile...)."""
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


def test_router_maps_no_bcc_and_stays_small(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    for i in (1, 2):
        lab.add_container(i)
    started = time.monotonic()
    lab.launch_routers()
    launch_s = time.monotonic() - started
    for i in (1, 2):
        cli(lab, i, "attach", lab.container_cidr(i, 1), f"netns:{lab.container_ns(i, 1)}")
    wait_fastdp(lab, 1)
    assert lab.exec_container(1, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", lab.container_ip(2, 1)],
                              check=False).returncode == 0
    overlays = cli(lab, 1, "report").stdout
    assert '"sleeve"' in overlays, "sleeve should run beside fastdp"
    for i in (1, 2):
        pid = router_pid(lab, i)
        st = proc_status(pid)
        print(f"h{i} router pid {pid}: VmRSS {st['VmRSS']} kB (RssAnon {st.get('RssAnon')} kB, "
              f"RssFile {st.get('RssFile')} kB); launch of 2 routers {launch_s:.1f} s")
        maps = open(f"/proc/{pid}/maps").read()
        assert "libbcc" not in maps and "libLLVM" not in maps and "libclang" not in maps, \
            [ln for ln in maps.splitlines() if "bcc" in ln or "LLVM" in ln][:3]
        assert st["VmRSS"] < RSS_LIMIT_KB, f"h{i} router RSS {st['VmRSS']} kB >= {RSS_LIMIT_KB} kB"
