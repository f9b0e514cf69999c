"""`weave-fdp bench ipam`: IPAM figures from real routers in lab namespaces and a simulated ring.

- attach latency once ready: a 3-host lab (default data planes), IPAM primed; N targets on
  h1 attached one after another with no address, each timed around the API call inside
  h1's namespace (veth, duplicate address probe of 300 ms, address). The IPAM part alone
  (``ipam_allocate``) is timed the same way.
- time to consensus: N routers (control plane only) launched with
  ``--ipalloc-init consensus=N`` and connected; then ``prime`` on h1, timed.
- allocations and frees: ``ipam_allocate`` then ``ipam_release`` of 1,000 idents spread over
  the 3 routers of the first lab (one client process per router, all at once); ops/s.
- ring gossip bytes: an in-process cluster (ipam/sim.py, real wire codec) of 10 and 100
  peers after consensus and a few allocations each: the size of one full state message and
  what a peer sends per periodic gossip round (to two neighbours, as the mesh does).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

Echo = Callable[[str], None] | None

TIMED_CALLS = """
import json, sys, time
from weave_fdp.router.client import RouterClient
op, calls = sys.argv[1], json.loads(sys.argv[2])
c = RouterClient(timeout=120)
out = []
t0 = time.perf_counter()
for args in calls:
    t = time.perf_counter()
    c.call(op, **args)
    out.append(time.perf_counter() - t)
print(json.dumps({"each": out, "wall": time.perf_counter() - t0}))
"""


def _timed(lab: Any, i: int, op: str, calls: list[dict[str, Any]]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    return lab.popen(i, [sys.executable, "-c", TIMED_CALLS, op, json.dumps(calls)], stdout=subprocess.PIPE,
                     text=True, env=env)


def _result(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = p.communicate(timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"timed client failed ({p.returncode})")
    return json.loads(out)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _ms(x: float) -> float:
    return round(x * 1000, 1)


def real_three(attaches: int, allocs: int, echo: Echo) -> dict[str, Any]:
    from weave_fdp.lab.lab import Lab, weave_command

    w = weave_command()
    with Lab(prefix="bi" + secrets.token_hex(2), hosts=3, topology="full") as lab:
        lab.up()
        for _ in range(attaches):
            lab.add_container(1)
        lab.launch_routers()
        lab.exec(1, [*w, "prime", "--timeout", "60"])
        res = _result(_timed(lab, 1, "attach", [{"target": f"netns:{lab.container_ns(1, j)}", "addrs": []}
                                                for j in range(1, attaches + 1)]))
        att = res["each"]
        res = _result(_timed(lab, 1, "ipam_allocate", [{"container_id": f"lat{j}"} for j in range(200)]))
        only = res["each"]
        if echo:
            echo(f"  attach with no address, {attaches} targets on h1: median {_ms(statistics.median(att))} ms, "
                 f"p99 {_ms(_pct(att, 0.99))} ms (includes the 300 ms duplicate address probe)")
            echo(f"  ipam_allocate alone, 200 calls: median {_ms(statistics.median(only))} ms, "
                 f"p99 {_ms(_pct(only, 0.99))} ms")
        per = [allocs // 3 + (1 if i < allocs % 3 else 0) for i in range(3)]
        t0 = time.perf_counter()
        procs = [_timed(lab, i + 1, "ipam_allocate", [{"container_id": f"b{i}-{k}"} for k in range(per[i])])
                 for i in range(3)]
        for p in procs:
            _result(p)
        t_alloc = time.perf_counter() - t0
        procs = [_timed(lab, i + 1, "ipam_release", [{"container_id": f"b{i}-{k}"} for k in range(per[i])])
                 for i in range(3)]
        for p in procs:
            _result(p)
        t_all = time.perf_counter() - t0
        ops = round(2 * allocs / t_all, 1)
        if echo:
            echo(f"  {allocs} allocations then {allocs} frees over 3 routers: {t_all:.2f} s, {ops} ops/s "
                 f"(allocations alone {round(allocs / t_alloc, 1)}/s; each op one API call and one fsync)")
        return {"attach_ms_median": _ms(statistics.median(att)), "attach_ms_p99": _ms(_pct(att, 0.99)),
                "attach_n": attaches, "ipam_allocate_ms_median": _ms(statistics.median(only)),
                "ipam_allocate_ms_p99": _ms(_pct(only, 0.99)), "alloc_free_ops": 2 * allocs,
                "alloc_free_s": round(t_all, 2), "alloc_free_ops_per_s": ops,
                "alloc_only_per_s": round(allocs / t_alloc, 1)}


def consensus_time(n: int, echo: Echo) -> dict[str, Any]:
    from weave_fdp.lab.lab import Lab, weave_command

    w = weave_command()
    env = {**os.environ, "WEAVE_FDP_OVERLAYS": "none"}
    with Lab(prefix="bc" + secrets.token_hex(2), hosts=n, topology="full") as lab:
        lab.up()
        lab.routers = lab.state.routers = True
        for i in range(1, n + 1):
            peers = [] if i == 1 else [lab.host_ip(1)]
            lab.exec(i, [*w, "launch", "--nickname", f"h{i}", "--ipalloc-init", f"consensus={n}", *peers], env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rep = json.loads(lab.exec(1, [*w, "report"]).stdout)
            if len(rep["peers"]) == n and all(p["reachable"] for p in rep["peers"]):
                break
            time.sleep(0.1)
        res = _result(_timed(lab, 1, "prime", [{"timeout": 60}]))
        t = res["each"][0]
        if echo:
            echo(f"  {n} routers: consensus {_ms(t)} ms after prime (mesh connected, quorum {n // 2 + 1})")
        return {"routers": n, "consensus_ms": _ms(t)}


def gossip_bytes(n: int, echo: Echo) -> dict[str, Any]:
    from weave_fdp.router.ipam.sim import Cluster

    c = Cluster(n, seed=1)
    for k, name in enumerate(c.names):
        for j in range(3):
            c.allocate(name, f"{name}-{j}")
    c.settle(3)
    sizes = [len(c.peers[x].gossip()) for x in c.names]
    tokens = len(c.peers[c.names[0]].ring.tokens)
    size = round(statistics.mean(sizes))
    if echo:
        echo(f"  {n} simulated peers: ring of {tokens} tokens, full state {size} bytes; "
             f"periodic gossip {2 * size} bytes per peer per round (two neighbours every 30 s)")
    return {"peers": n, "tokens": tokens, "state_bytes": size, "bytes_per_peer_per_round": 2 * size}


def run_all(sim: list[int], routers: list[int], attaches: int = 50, allocs: int = 1000,
            echo: Echo = print) -> dict[str, Any]:
    out: dict[str, Any] = {"gossip": [], "consensus": []}
    if echo:
        echo("ring gossip (simulated peers, real wire codec):")
    for n in sim:
        out["gossip"].append(gossip_bytes(n, echo))
    if echo:
        echo("real routers in lab namespaces:")
    if attaches or allocs:
        out["three_routers"] = real_three(attaches, allocs, echo)
    for n in routers:
        out["consensus"].append(consensus_time(n, echo))
    return out
