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
import gc
import json
import logging
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from weave_fdp.router.mesh import codec, sim
from weave_fdp.router.mesh.transport import HEARTBEAT_INTERVAL as HEARTBEAT_S

Echo = Callable[[str], None] | None


WINDOW_S = 60.0   # simulated seconds of steady-state gossip measured per run


async def _sim(n: int, degree: int = 3, gossip_interval: float = 30.0, protocol: int = 2,
               window_s: float = WINDOW_S) -> dict[str, Any]:
    rng = random.Random(n)
    nodes = [sim.make_node(i, gossip_interval=0, rng=random.Random(i)) for i in range(n)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(1, n):
        for j in rng.sample(range(i), min(degree, i)):
            sim.connect(nodes[i], nodes[j], protocol_version=protocol)
    t_connect = time.perf_counter()
    while not sim.converged(nodes):
        await asyncio.sleep(0.01)
    # the moment the last node took its last needed entry (polling is coarse when the loop is busy)
    t_conv = max([t_connect, *(nd.topology_changed_at for nd in nodes)])
    cpu = time.process_time() - cpu0
    to_converge = sum(nd.gossip_tx_bytes for nd in nodes)
    await asyncio.sleep(0.3)   # let in-flight gossip finish before measuring the steady state
    # steady state: periodic rounds come every gossip_interval (mean) per node; run the rounds
    # ``window_s`` of simulated time holds and count every byte they cause (replies included)
    rounds = max(1, round(window_s / gossip_interval))
    before = sum(nd.gossip_tx_bytes for nd in nodes)
    for _ in range(rounds):
        for nd in nodes:
            nd.gossip_round()
        await asyncio.sleep(0.2)
    steady = sum(nd.gossip_tx_bytes for nd in nodes) - before
    links = sum(len(nd.links) for nd in nodes) // 2
    stats: dict[str, int] = {}
    for nd in nodes:
        for k, v in nd.topo_gossip.stats.items():
            stats[k] = stats.get(k, 0) + v
    for node in nodes:
        node.stop()
    hb = 2 * links * (codec.FRAME_HEADER.size + len(codec.encode_message(codec.HEARTBEAT, {}))) / HEARTBEAT_S / n
    return {"peers": n, "links": links, "protocol": protocol,
            "connect_s": round(t_connect - t0, 3), "convergence_s": round(t_conv - t_connect, 3),
            "cpu_s_to_converge": round(cpu, 2),
            "gossip_bytes_to_converge_per_peer": round(to_converge / n),
            "steady_gossip_bytes_per_s_per_peer": round(steady / (rounds * gossip_interval) / n, 1),
            "heartbeat_bytes_per_s_per_peer": round(hb, 1),
            "gossip_interval_s": gossip_interval, "topology_gossip": stats}


def simulate(n: int, gc_paused: bool = True, **kw: Any) -> dict[str, Any]:
    """One simulated run. ``gc_paused``: no cyclic GC while it runs. One process holds the
    state of every simulated router, so each full collection walks N routers' objects
    (a real router's heap is 1/N of it); reference counting still frees everything."""
    logging.getLogger("weave_fdp").setLevel(logging.WARNING)
    was = gc.isenabled()
    if gc_paused:
        gc.collect()
        gc.disable()
    try:
        res = asyncio.run(_sim(n, **kw))
    finally:
        if was:
            gc.enable()
        gc.collect()
    res["gc_paused"] = gc_paused
    return res


def _proc_stats(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


POLLER = r"""
import sys, time
from weave_fdp.router.client import RouterClient
n, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
client = RouterClient(timeout=2)
while time.monotonic() < deadline:
    try:
        rep = client.call("report")
        if len(rep["peers"]) == n and all(p["reachable"] for p in rep["peers"]):
            print(time.monotonic(), flush=True)
            break
    except Exception:
        pass
    time.sleep(0.01)
"""


def real(n: int, idle_s: float = 10.0, echo: Echo = None, overlays: bool = True) -> dict[str, Any]:
    """N routers in lab namespaces. Convergence is seen by a poller inside each namespace
    (it asks its router's API every 10 ms and prints CLOCK_MONOTONIC, shared by all
    namespaces, on the first full view); the CLI-polling figure (one `weave-fdp report`
    process per router and round, ~0.2 s each) is kept for comparison with older runs."""
    from weave_fdp.lab.lab import Lab, weave_command

    prefix = "bm" + secrets.token_hex(3)
    w = weave_command()
    env = None if overlays else {**os.environ, "WEAVE_FDP_OVERLAYS": "none"}
    with Lab(prefix=prefix, hosts=n, topology="full") as lab:
        lab.up()
        pollers = []
        try:
            pollers = [lab.popen(i, [sys.executable, "-c", POLLER, str(n), "60"], stdout=subprocess.PIPE,
                                 text=True) for i in range(1, n + 1)]
            t0 = time.perf_counter()
            mono_last_start = 0.0
            for i in range(1, n + 1):
                peers = [] if i == 1 else [lab.host_ip(1)]
                mono_last_start = time.monotonic()
                lab.exec(i, [*w, "launch", "--nickname", f"h{i}", "--state-dir",
                             f"/run/weave-fdp/bench-{prefix}/h{i}", *peers], env=env)
            t_launch, mono_launch = time.perf_counter(), time.monotonic()
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
            seen = []
            for p in pollers:
                out, _ = p.communicate(timeout=70)
                seen.append(float(out.split()[0]) if out.strip() else float("nan"))
            conv = max(seen) - mono_launch
            reps = [report(i) for i in range(1, n + 1)]
            pids = [r["router"]["pid"] for r in reps]
            g0 = [r["router"]["gossip_tx_bytes"] for r in reps]
            s0 = [_proc_stats(p) for p in pids]
            time.sleep(idle_s)
            s1 = [_proc_stats(p) for p in pids]
            g1 = [report(i)["router"]["gossip_tx_bytes"] for i in range(1, n + 1)]
            cpu = [(b[1] - a[1]) / idle_s * 100 for a, b in zip(s0, s1)]
            return {"routers": n, "launch_s": round(t_launch - t0, 2),
                    # negative: every router had the full view before the last `launch` returned
                    "convergence_s_after_last_launch": round(conv, 3),
                    "convergence_s_from_last_launch_start": round(max(seen) - mono_last_start, 3),
                    "last_launch_s": round(mono_launch - mono_last_start, 3), "overlays": overlays,
                    "convergence_s_cli_polling": round(t_conv - t_launch, 2),
                    "links_per_router": sum(len(r["connections"]) for r in reps) / n,
                    "idle_rss_mb_avg": round(sum(s[0] for s in s1) / n / 2**20, 1),
                    "idle_rss_mb_max": round(max(s[0] for s in s1) / 2**20, 1),
                    "idle_cpu_pct_avg": round(sum(cpu) / n, 2), "idle_cpu_pct_max": round(max(cpu), 2),
                    "idle_s": idle_s,
                    "idle_gossip_bytes_per_s_per_peer": round(sum(b - a for a, b in zip(g0, g1)) / idle_s / n, 1)}
        finally:
            for p in pollers:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for i in range(1, n + 1):
                lab.exec(i, [*w, "reset"], check=False)
            import shutil

            shutil.rmtree(f"/run/weave-fdp/bench-{prefix}", ignore_errors=True)


def run_all(sim_sizes: list[int], real_count: int, echo: Echo = print, protocol: int = 2,
            gc_paused: bool = True, overlays: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"simulated": [], "real": None}
    for n in sim_sizes:
        res = simulate(n, protocol=protocol, gc_paused=gc_paused)
        out["simulated"].append(res)
        if echo:
            echo(f"simulated {n} peers ({res['links']} links, protocol {protocol}): converged "
                 f"{res['convergence_s']} s after the last connect ({res['cpu_s_to_converge']} s CPU); "
                 f"{res['gossip_bytes_to_converge_per_peer']} gossip B/peer to converge; steady gossip "
                 f"{res['steady_gossip_bytes_per_s_per_peer']} B/s/peer (+ heartbeats "
                 f"{res['heartbeat_bytes_per_s_per_peer']} B/s/peer)")
    if real_count:
        res = real(real_count, echo=echo, overlays=overlays)
        out["real"] = res
        if echo:
            echo(f"real {real_count} routers: converged {res['convergence_s_after_last_launch']} s after the "
                 f"last launch returned ({res['convergence_s_from_last_launch_start']} s after it started, "
                 f"the launch itself taking {res['last_launch_s']} s; seen by in-namespace pollers; "
                 f"{res['convergence_s_cli_polling']} s by CLI polling); idle RSS {res['idle_rss_mb_avg']} MB avg ({res['idle_rss_mb_max']} max); "
                 f"idle CPU {res['idle_cpu_pct_avg']}% avg ({res['idle_cpu_pct_max']}% max); idle gossip "
                 f"{res['idle_gossip_bytes_per_s_per_peer']} B/s/peer over {res['idle_s']} s")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m weave_fdp.router.mesh.bench")
    ap.add_argument("--sim", default="10,100,500")
    ap.add_argument("--real", type=int, default=10)
    ap.add_argument("--protocol", type=int, default=2, choices=[1, 2],
                    help="topology gossip of the simulated links (1: push entries, 2: digests)")
    ap.add_argument("--gc", action="store_true", help="keep Python's cyclic GC on in simulated runs")
    ap.add_argument("--no-overlays", action="store_true", help="real routers without data planes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = run_all([int(s) for s in a.sim.split(",") if s], a.real, echo=None if a.json else print,
                  protocol=a.protocol, gc_paused=not a.gc, overlays=not a.no_overlays)
    if a.json:
        json.dump(res, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
