"""The overlay part of ``weave-fdp lab demo``: routers, containers, traffic, dashboard.

Everything runs through the same commands a user types (``launch``, ``attach``,
``status``, ``top --once``) inside the lab's host namespaces, so the demo shows the
project as it is used, not an internal shortcut.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.console import Console
from rich.table import Table

from weave_fdp.cli.output import host_matrix
from weave_fdp.errors import FdpError
from weave_fdp.lab.lab import Lab, weave_command

CONVERGE_TIMEOUT_S = 20.0
IPERF_SECONDS = 3


def _report(lab: Lab, i: int) -> dict[str, Any]:
    cp = lab.exec(i, [*weave_command(), "report"], check=False, timeout=10)
    if cp.returncode != 0:
        return {}
    try:
        return json.loads(cp.stdout)
    except json.JSONDecodeError:
        return {}


def _converged(lab: Lab, i: int) -> bool:
    """Host i knows every peer and has a connection with a data path to each underlay neighbour.

    Discovered peers behind a blocked underlay stay "failed" (and retried), as they should.
    """
    rep = _report(lab, i)
    peers = [p for p in rep.get("peers", []) if p.get("reachable", True)]
    carrying = [c for c in rep.get("connections", []) if c.get("state") == "established" and c.get("mode")]
    return len(peers) == lab.hosts and len(carrying) >= len(lab.neighbours(i))


def wait_converged(lab: Lab, timeout: float = CONVERGE_TIMEOUT_S) -> float:
    """Seconds until every router sees the whole mesh; raises when it does not."""
    t0 = time.monotonic()
    pending = set(range(1, lab.hosts + 1))
    while pending and time.monotonic() - t0 < timeout:
        pending = {i for i in pending if not _converged(lab, i)}
        if pending:
            time.sleep(0.2)
    if pending:
        hosts = ", ".join(f"h{i}" for i in sorted(pending))
        raise FdpError(f"routers on {hosts} did not see the whole mesh within {timeout:.0f} s",
                       fix="see `weave-fdp lab exec h1 -- weave-fdp status connections`")
    return time.monotonic() - t0


def connection_lines(lab: Lab, i: int) -> list[str]:
    cp = lab.exec(i, [*weave_command(), "status", "connections"], check=False, timeout=10)
    return [line for line in cp.stdout.splitlines() if line.strip()]


def ping_matrix(lab: Lab) -> dict[tuple[int, int], float | None]:
    """RTT in ms from container 1 of each host to container 1 of every other (cold ARP included)."""
    pairs = [(a, b) for a in range(1, lab.hosts + 1) for b in range(1, lab.hosts + 1) if a != b]

    def ping(pair: tuple[int, int]) -> float | None:
        a, b = pair
        dst = lab.container_ip(b, 1)
        cp = lab.exec_container(a, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst], check=False, timeout=15)
        m = re.search(r"= [\d.]+/([\d.]+)/", cp.stdout)
        return float(m.group(1)) if cp.returncode == 0 and m else None

    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return dict(zip(pairs, pool.map(ping, pairs)))


def ping_table(lab: Lab, rtts: dict[tuple[int, int], float | None]) -> Table:
    def cell(a: int, b: int) -> str:
        rtt = rtts[(a, b)]
        return f"[green]{rtt:.3f}[/]" if rtt is not None else "[red]lost[/]"

    return host_matrix(lab.hosts, "container ping (avg RTT, ms): rows ping columns", lambda a: f"h{a}-c1", cell,
                       header=lambda b: f"h{b}-c1 {lab.container_ip(b, 1)}", justify="right")


def iperf(lab: Lab, client: int, server: int, seconds: int = IPERF_SECONDS) -> float:
    """One TCP stream from container 1 of ``client`` to that of ``server``; Gbit/s."""
    srv = lab.popen_container(server, 1, ["iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dst = lab.container_ip(server, 1)
        for _ in range(50):  # the server needs a moment to listen
            cp = lab.exec_container(client, 1, ["iperf3", "-c", dst, "-t", str(seconds), "-J"],
                                    check=False, timeout=seconds + 20)
            try:
                result = json.loads(cp.stdout)
            except json.JSONDecodeError:
                result = {"error": cp.stderr.strip()}
            received = result.get("end", {}).get("sum_received")
            if cp.returncode == 0 and received:
                return received["bits_per_second"] / 1e9
            time.sleep(0.1)
        raise FdpError(f"iperf3 from h{client}-c1 to h{server}-c1 failed: {str(result.get('error'))[:200]}")
    finally:
        srv.kill()
        srv.wait()


def top_frame(lab: Lab, i: int, width: int = 120) -> str:
    env = {**os.environ, "COLUMNS": str(width), "LINES": "40"}
    cp = lab.exec(i, [*weave_command(), "top", "--once"], check=False, timeout=15, env=env)
    return cp.stdout


def run_overlay_demo(lab: Lab, out: Console) -> None:
    """Launch routers, attach containers, show connections, pings, throughput and a dashboard frame."""
    t0 = time.monotonic()
    lab.launch_routers()
    took = wait_converged(lab)
    out.print(f"routers launched; every router saw the whole mesh after {time.monotonic() - t0:.2f} s"
              f" (gossip convergence {took:.2f} s)")
    lab.attach_containers()
    for i in range(1, lab.hosts + 1):
        out.print(f"[bold]h{i}$ weave-fdp status connections")
        for line in connection_lines(lab, i):
            out.print(f"  {line}", highlight=False)
    rtts = ping_matrix(lab)
    out.print(ping_table(lab, rtts))
    lost = [pair for pair, rtt in rtts.items() if rtt is None]
    if lost:
        raise FdpError("containers could not reach each other: "
                       + ", ".join(f"h{a}-c1 -> h{b}-c1" for a, b in lost))
    gbps = iperf(lab, 1, lab.hosts)
    out.print(f"iperf3 h1-c1 -> h{lab.hosts}-c1, 1 TCP stream, {IPERF_SECONDS} s: [bold]{gbps:.2f} Gbit/s")
    out.print("[bold]h1$ weave-fdp top --once")
    out.print(top_frame(lab, 1, width=out.width), highlight=False, markup=False, soft_wrap=True)
