"""Mesh benchmark (not a test): convergence, join and leave, idle cost, gossip bytes.

Run: ``weave-fdp bench mesh`` or ``python -m weave_fdp.bench.mesh [--sim 100,500] [--real 10] [--plot F]``.

* simulated: N MeshNodes in one process over the in-memory transport (router/mesh/sim.py:
  the real codec, a one-way link latency, asyncio on a simulated clock), each joined to
  3 random earlier nodes (a connected random graph). Reported per peer: CPU and gossip
  bytes until every node holds every node's current entry, and the simulated time that
  took; then one peer joins (3 links) and one leaves (its links close), each measured
  as messages and bytes each other peer sent and the simulated time until the others
  agree again; then the steady state of periodic gossip.
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
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weave_fdp.router.mesh import codec, sim
from weave_fdp.router.mesh.node import MeshNode
from weave_fdp.router.mesh.transport import HEARTBEAT_INTERVAL as HEARTBEAT_S

Echo = Callable[[str], None] | None


WINDOW_S = 60.0     # simulated seconds of steady-state gossip measured per run
LATENCY_S = 0.005   # one-way latency of a simulated link
SETTLE_LIMIT_S = 600.0   # simulated seconds a phase may take before the run is called stuck


def _agree(live: list[MeshNode]) -> bool:
    """Every node of ``live`` holds every one's current entry (entries of peers gone may
    linger until garbage collection: sim.converged is stricter)."""
    want = [(nd.name, nd.topology.local.key()) for nd in live]
    for nd in live:
        peers = nd.topology.peers
        for name, key in want:
            e = peers.get(name)
            if e is None or e.key() != key:
                return False
    return True


class MeshSim:
    """N simulated peers on one virtual clock, and the phases measured on them."""

    def __init__(self, n: int, degree: int = 3, protocol: int = codec.PROTOCOL_MAX, latency: float = LATENCY_S,
                 seed: int | None = None) -> None:
        self.degree = degree
        self.protocol = protocol
        self.rng = random.Random(n if seed is None else seed)
        self.net = sim.SimNet(latency)
        self.nodes = [self._node(i) for i in range(n)]
        self.active = list(self.nodes)   # nodes whose gossip settle() waits for

    def _node(self, i: int) -> MeshNode:
        return sim.make_node(i, gossip_interval=0, rng=random.Random(i), intern_entry=self.net.intern,
                             intern_row=self.net.intern_row)

    def _join(self, node: MeshNode, among: list[MeshNode]) -> None:
        for other in self.rng.sample(among, min(self.degree, len(among))):
            sim.connect(node, other, protocol_version=self.protocol, net=self.net)

    async def settle(self) -> None:
        """Run the clock until no message is in flight and no node has gossip or a route
        recompute pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT_S
        while True:
            await asyncio.sleep(0.01)
            if self.net.in_flight == 0 and all(nd.quiet() for nd in self.active):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"simulated mesh of {len(self.nodes)} still busy after {SETTLE_LIMIT_S:g} s")

    async def phase(self, live: list[MeshNode], action: Callable[[], None],
                    counted: list[MeshNode] | None = None) -> dict[str, Any]:
        """Do ``action`` at a quiet moment and measure until ``live`` agree again; messages
        and bytes are those ``counted`` sent (default: ``live``)."""
        loop = asyncio.get_running_loop()
        msgs0, bytes0 = dict(self.net.tx_msgs), dict(self.net.tx_bytes)
        t0, cpu0 = loop.time(), time.process_time()
        action()
        await self.settle()
        cpu = time.process_time() - cpu0
        if not _agree(live):
            raise RuntimeError("simulated mesh settled without converging")
        t_conv = max(t0, *(nd.topology_changed_at for nd in live)) - t0
        names = [nd.name for nd in (counted or live)]
        msgs = [self.net.tx_msgs.get(p, 0) - msgs0.get(p, 0) for p in names]
        sent = [self.net.tx_bytes.get(p, 0) - bytes0.get(p, 0) for p in names]
        return {"sim_s": round(t_conv, 3), "cpu_s": round(cpu, 3),
                "cpu_ms_per_peer": round(cpu / len(live) * 1000, 3),
                "msgs_per_peer": round(statistics.mean(msgs), 2), "msgs_per_peer_max": max(msgs),
                "bytes_per_peer": round(statistics.mean(sent)), "bytes_per_peer_max": max(sent)}

    async def run(self, window_s: float = WINDOW_S, gossip_interval: float = 30.0) -> dict[str, Any]:
        nodes, n = self.nodes, len(self.nodes)

        def build() -> None:
            for i in range(1, n):
                self._join(nodes[i], nodes[:i])
        converge = await self.phase(nodes, build)
        links = sum(len(nd.links) for nd in nodes) // 2

        joiner = self._node(n)
        self.active.append(joiner)
        everyone = [*nodes, joiner]
        join = await self.phase(everyone, lambda: self._join(joiner, nodes), counted=nodes)
        join["joiner_bytes"] = self.net.tx_bytes.get(joiner.name, 0)
        join["routes_agree"] = all(nd.routes.reachable(joiner.name) for nd in nodes)

        leaver = nodes[self.rng.randrange(1, n)]
        rest = [nd for nd in everyone if nd is not leaver]
        self.active = rest

        def leave() -> None:
            leaver.stop()   # closes its links: the neighbours see them go down
        leave_res = await self.phase(rest, leave)
        leave_res["routes_agree"] = all(not nd.routes.reachable(leaver.name) for nd in rest)

        # steady state: a periodic round every gossip_interval (mean) per node; run the rounds
        # ``window_s`` of simulated time holds and count every byte they cause (replies included)
        rounds = max(1, round(window_s / gossip_interval))
        before = sum(self.net.tx_bytes.values())
        for _ in range(rounds):
            for nd in rest:
                nd.gossip_round()
            await self.settle()
        steady = sum(self.net.tx_bytes.values()) - before
        stats: dict[str, int] = {}
        for nd in everyone:
            for k, v in nd.topo_gossip.stats.items():
                stats[k] = stats.get(k, 0) + v
        for nd in rest:
            nd.stop()
        hb = 2 * links * (codec.FRAME_HEADER.size + len(codec.encode_message(codec.HEARTBEAT, {}))) / HEARTBEAT_S / n
        return {"peers": n, "links": links, "protocol": self.protocol, "latency_ms": self.net.latency * 1000,
                "converge": converge, "join": join, "leave": leave_res,
                "steady_gossip_bytes_per_s_per_peer": round(steady / (rounds * gossip_interval) / len(rest), 1),
                "heartbeat_bytes_per_s_per_peer": round(hb, 1),
                "gossip_interval_s": gossip_interval, "topology_gossip": stats}


def simulate(n: int, gc_paused: bool = True, protocol: int = codec.PROTOCOL_MAX, latency: float = LATENCY_S,
             **kw: Any) -> dict[str, Any]:
    """One simulated run. ``gc_paused``: no cyclic GC while it runs. One process holds the
    state of every simulated router, so each full collection walks N routers' objects
    (a real router's heap is 1/N of it); reference counting still frees everything."""
    logging.getLogger("weave_fdp").setLevel(logging.WARNING)
    was = gc.isenabled()
    if gc_paused:
        gc.collect()
        gc.disable()
    try:
        with asyncio.Runner(loop_factory=sim.VirtualClockLoop) as runner:
            res = runner.run(MeshSim(n, protocol=protocol, latency=latency).run(**kw))
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


def _sim_line(res: dict[str, Any]) -> str:
    c, j, lv = res["converge"], res["join"], res["leave"]
    return (f"simulated {res['peers']} peers ({res['links']} links, protocol {res['protocol']}, "
            f"{res['latency_ms']:g} ms links): converged in {c['sim_s']} s simulated, "
            f"{c['cpu_ms_per_peer']} ms CPU/peer ({c['cpu_s']} s in all), {c['bytes_per_peer']} B/peer; "
            f"join: {j['msgs_per_peer']} msgs/peer (max {j['msgs_per_peer_max']}), {j['bytes_per_peer']} B/peer, "
            f"{j['sim_s']} s; leave: {lv['msgs_per_peer']} msgs/peer (max {lv['msgs_per_peer_max']}), "
            f"{lv['bytes_per_peer']} B/peer, {lv['sim_s']} s; steady gossip "
            f"{res['steady_gossip_bytes_per_s_per_peer']} B/s/peer (+ heartbeats "
            f"{res['heartbeat_bytes_per_s_per_peer']} B/s/peer)")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        return ""


def plot(sims: list[dict[str, Any]], path: Path) -> None:
    """Per-peer cost against N: CPU and bytes to converge, join/leave messages and bytes,
    simulated times."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["peers"] for r in sims]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0][0]
    ax.plot(ns, [r["converge"]["cpu_ms_per_peer"] for r in sims], marker="o", label="to converge")
    ax.plot(ns, [r["join"]["cpu_ms_per_peer"] for r in sims], marker="s", label="one join")
    ax.plot(ns, [r["leave"]["cpu_ms_per_peer"] for r in sims], marker="^", label="one leave")
    ax.set_title("CPU per peer (ms)")
    ax = axes[0][1]
    ax.plot(ns, [r["converge"]["bytes_per_peer"] / 1024 for r in sims], marker="o", label="to converge")
    ax.set_title("gossip sent per peer to converge (KiB)")
    ax = axes[1][0]
    for key, m in (("join", "s"), ("leave", "^")):
        ax.plot(ns, [r[key]["msgs_per_peer"] for r in sims], marker=m, label=f"one {key}: mean")
        ax.plot(ns, [r[key]["msgs_per_peer_max"] for r in sims], marker=m, ls="--", label=f"one {key}: max")
    ax.set_title("gossip messages sent per peer")
    ax = axes[1][1]
    for key, m in (("converge", "o"), ("join", "s"), ("leave", "^")):
        ax.plot(ns, [r[key]["sim_s"] for r in sims], marker=m, label=key)
    ax.set_title("simulated seconds until every peer agrees")
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peers (N)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lat = sims[0]["latency_ms"] if sims else 0
    fig.suptitle(f"weave-fdp mesh, simulated: 3 links per joining peer, {lat:g} ms links")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_all(sim_sizes: list[int], real_count: int, echo: Echo = print, protocol: int = codec.PROTOCOL_MAX,
            gc_paused: bool = True, overlays: bool = True, plot_path: Path | None = None,
            latency: float = LATENCY_S, save_path: Path | None = None) -> dict[str, Any]:
    """``save_path``: the simulated results so far are written there after each size (a
    long run keeps what it measured; ``--replot`` draws from such a file)."""
    out: dict[str, Any] = {"simulated": [], "real": None}
    for n in sim_sizes:
        res = simulate(n, protocol=protocol, gc_paused=gc_paused, latency=latency)
        res["cpu_model"] = _cpu_model()
        res["loadavg"] = os.getloadavg()[0]
        out["simulated"].append(res)
        if save_path is not None:
            save_path.write_text(json.dumps(out["simulated"], indent=1))
        if echo:
            echo(_sim_line(res) + f" (load average {res['loadavg']:.1f})")
    if plot_path is not None and out["simulated"]:
        plot(out["simulated"], plot_path)
        if echo:
            echo(f"plot: {plot_path}")
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
    ap = argparse.ArgumentParser(prog="python -m weave_fdp.bench.mesh")
    ap.add_argument("--sim", default="10,100,500")
    ap.add_argument("--real", type=int, default=10)
    ap.add_argument("--protocol", type=int, default=codec.PROTOCOL_MAX, choices=[1, 2, 3],
                    help="topology gossip of the simulated links (1: push entries, 2: digests, "
                         "3: digests and binary entries)")
    ap.add_argument("--latency-ms", type=float, default=LATENCY_S * 1000, help="one-way latency of simulated links")
    ap.add_argument("--gc", action="store_true", help="keep Python's cyclic GC on in simulated runs")
    ap.add_argument("--no-overlays", action="store_true", help="real routers without data planes")
    ap.add_argument("--plot", type=Path, help="write a PNG of the simulated figures against N")
    ap.add_argument("--save", type=Path, help="write the simulated results (JSON) after each size")
    ap.add_argument("--replot", type=Path, help="only draw --plot from a file written by --save")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.replot:
        if not a.plot:
            ap.error("--replot needs --plot")
        plot(sorted(json.loads(a.replot.read_text()), key=lambda r: r["peers"]), a.plot)
        return
    res = run_all([int(s) for s in a.sim.split(",") if s], a.real, echo=None if a.json else print,
                  protocol=a.protocol, gc_paused=not a.gc, overlays=not a.no_overlays, plot_path=a.plot,
                  latency=a.latency_ms / 1000, save_path=a.save)
    if a.json:
        json.dump(res, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
