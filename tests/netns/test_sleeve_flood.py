"""A flood of 64-byte UDP datagrams through the standalone sleeve (one data thread per host
for both directions) leaves it forwarding: a TCP stream crosses it afterwards. The capture
ring once lost step with the kernel under exactly this and stopped forwarding for good."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

from weave_fdp.bench.paths import SleevePath
from weave_fdp.plumbing.netns import popen_in_netns, stop_process


def _iperf3(path: SleevePath, *args: str) -> dict:
    srv = popen_in_netns(path.server_ns, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = subprocess.run(["ip", "netns", "exec", path.client_ns, "iperf3", "-c", path.server_ip, "-J", *args],
                           capture_output=True, text=True, timeout=40, check=False)
        return json.loads(r.stdout or "{}")
    finally:
        stop_process(srv, 3)


def test_the_sleeve_forwards_after_a_flood_of_small_datagrams() -> None:
    path = SleevePath("fl" + secrets.token_hex(2))
    try:
        path.build()
        flood = _iperf3(path, "-u", "-l", "64", "-b", "0", "-t", "3")
        assert "error" not in flood, flood.get("error")
        assert flood["end"]["sum"]["packets"] > 1000
        stream = _iperf3(path, "-t", "2")
        assert "end" in stream and "error" not in stream, f"no stream crossed the sleeve after the flood: {stream}"
        assert stream["end"]["sum_received"]["bits_per_second"] > 50e6
        status = json.loads((path.tmp / "status-h1.json").read_text())
        assert status["capture"] == "recv" and status["stats"]["captured"] > 1000
    finally:
        path.close()
