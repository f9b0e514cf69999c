"""Mesh benchmark (not a test): convergence, idle cost, gossip bytes.

Run: ``weave-fdp bench mesh`` or ``python -m weave_fdp.router.mesh.bench [--sim 100,500] [--real 10]``.

* simulated: N MeshNodes in one process over the in-memory transport, each joined to
  3 random earlier nodes (a connected random graph); convergence = time from the last
  connect until every node holds every node's current entry.
* real: N routers in lab namespaces (full underlay), launched with the first one as
  their only peer; convergence = time from the last launch until every router's
  report lists N peers with established connections; then idle RSS/CPU per router
  over a few seconds and gossip bytes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

from weave_fdp.router.mesh import sim

Echo = Callable[[str], None] | None


async def _sim(n: int, degree: int = 3, idle_s: float = 3.0, gossip_interval: float = 30.0) -> dict[str, Any]:
    rng = random.Random(n)
    nodes = [sim.make_node(i, gossip_interval=gossip_interval, rng=random.Random(i)) for i in range(n)]
    for node in nodes:
        node.start()
    t0 = time.perf_counter()
    for i in range(1, n):
        for j in rng.sample(range(i), min(degree, i)):
            sim.connect(nodes[i], nodes[j])
    t_connect = time.perf_counter()
    while not sim.converged(nodes):
        await asyncio.sleep(0.01)
    t_conv = time.perf_counter()
    # idle gossip: periodic full-state only
    before = sum(nd.gossip_tx_bytes for nd in nodes)
    await asyncio.sleep(idle_s)
    idle_bytes = sum(nd.gossip_tx_bytes for nd in nodes) - before
    links = sum(len(nd.links) for nd in nodes) // 2
    stats: dict[str, int] = {}
    for nd in nodes:
        for k, v in nd.topo_gossip.stats.items():
            stats[k] = stats.get(k, 0) + v
    for node in nodes:
        node.stop()
    return {"peers": n, "links": links,
            "connect_s": round(t_connect - t0, 3), "convergence_s": round(t_conv - t_connect, 3),
            "gossip_bytes_total_to_converge": before,
            "idle_gossip_bytes_per_s_per_peer": round(idle_bytes / idle_s / n, 1),
            "gossip_interval_s": gossip_interval, "topology_gossip": stats}


def simulate(n: int, **kw: Any) -> dict[str, Any]:
    logging.getLogger("weave_fdp").setLevel(logging.WARNING)
    return asyncio.run(_sim(n, **kw))


def _proc_stats(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def real(n: int, idle_s: float = 5.0, echo: Echo = None) -> dict[str, Any]:
    from weave_fdp.lab.lab import Lab, weave_command

    prefix = "bm" + secrets.token_hex(3)
    w = weave_command()
    with Lab(prefix=prefix, hosts=n, topology="full") as lab:
        lab.up()
        try:
            t0 = time.perf_counter()
            for i in range(1, n + 1):
                peers = [] if i == 1 else [lab.host_ip(1)]
                lab.exec(i, [*w, "launch", "--nickname", f"h{i}", "--state-dir",
                             f"/run/weave-fdp/bench-{prefix}/h{i}", *peers])
            t_launch = time.perf_counter()
            if echo:
                echo(f"  launched {n} routers in {t_launch - t0:.2f} s")

            def report(i: int) -> dict[str, Any]:
                return json.loads(lab.exec(i, [*w, "report"]).stdout)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reps = [report(i) for i in range(1, n + 1)]
                if all(len(r["peers"]) == n and all(p["reachable"] for p in r["peers"]) for r in reps):
                    break
                time.sleep(0.05)
            t_conv = time.perf_counter()
            reps = [report(i) for i in range(1, n + 1)]
            pids = [r["router"]["pid"] for r in reps]
            g0 = [r["router"]["gossip_tx_bytes"] for r in reps]
            s0 = [_proc_stats(p) for p in pids]
            time.sleep(idle_s)
            s1 = [_proc_stats(p) for p in pids]
            g1 = [report(i)["router"]["gossip_tx_bytes"] for i in range(1, n + 1)]
            cpu = [(b[1] - a[1]) / idle_s * 100 for a, b in zip(s0, s1)]
            return {"routers": n, "launch_s": round(t_launch - t0, 2),
                    "convergence_s_after_last_launch": round(t_conv - t_launch, 2),
                    "links_per_router": sum(len(r["connections"]) for r in reps) / n,
                    "idle_rss_mb_avg": round(sum(s[0] for s in s1) / n / 2**20, 1),
                    "idle_rss_mb_max": round(max(s[0] for s in s1) / 2**20, 1),
                    "idle_cpu_pct_avg": round(sum(cpu) / n, 2), "idle_cpu_pct_max": round(max(cpu), 2),
                    "idle_gossip_bytes_per_s_per_peer": round(sum(b - a for a, b in zip(g0, g1)) / idle_s / n, 1)}
        finally:
            for i in range(1, n + 1):
                lab.exec(i, [*w, "reset"], check=False)
            import shutil

            shutil.rmtree(f"/run/weave-fdp/bench-{prefix}", ignore_errors=True)


def run_all(sim_sizes: list[int], real_count: int, echo: Echo = print) -> dict[str, Any]:
    out: dict[str, Any] = {"simulated": [], "real": None}
    for n in sim_sizes:
        res = simulate(n)
        out["simulated"].append(res)
        if echo:
            echo(f"simulated {n} peers ({res['links']} links): converged {res['convergence_s']} s after the "
                 f"last connect; {res['gossip_bytes_total_to_converge']} gossip bytes to converge; idle "
                 f"gossip {res['idle_gossip_bytes_per_s_per_peer']} B/s/peer")
    if real_count:
        res = real(real_count, echo=echo)
        out["real"] = res
        if echo:
            echo(f"real {real_count} routers: converged {res['convergence_s_after_last_launch']} s after the "
                 f"last launch; idle RSS {res['idle_rss_mb_avg']} MB avg ({res['idle_rss_mb_max']} max); "
                 f"idle CPU {res['idle_cpu_pct_avg']}% avg ({res['idle_cpu_pct_max']}% max); idle gossip "
                 f"{res['idle_gossip_bytes_per_s_per_peer']} B/s/peer")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m weave_fdp.router.mesh.bench")
    ap.add_argument("--sim", default="100,500")
    ap.add_argument("--real", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = run_all([int(s) for s in a.sim.split(",") if s], a.real, echo=None if a.json else print)
    if a.json:
        json.dump(res, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
