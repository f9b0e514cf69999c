"""Benchmark of the dashboard at scale (not a test): ``python -m weave_fdp.bench.dashboard``.

Builds a replay file of reports with N flows whose counters move, then measures
(1) per-frame cost in this process: JSON decode (of the whole report, and of the
``top`` op's changed rows folded into the dashboard's copy), parse, rates, sort, render at
200x50 and 80x24; (2) the CPU share of a real ``weave-fdp top`` at 1 Hz on that
replay, run in a private tmux server for a while, from /proc/<pid>/stat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from weave_fdp.dashboard.state import Dashboard
from weave_fdp.dashboard.view import offscreen_printer


def synth_report(n_flows: int, t: int, peers: int = 8, seed: int = 1) -> dict[str, Any]:
    """A report of ``peers`` peers and ``n_flows`` flows, counters at second ``t``."""
    rnd = random.Random(seed)
    names = [f"7e:aa:00:00:00:{i:02x}" for i in range(1, peers + 1)]
    flows = []
    for k in range(n_flows):
        pps = rnd.choice((0, 1, 10, 100, 1000))
        size = rnd.choice((64, 200, 1400))
        via = names[1 + k % (peers - 1)]
        flows.append({
            "src_mac": f"0a:58:0a:20:{k >> 8 & 255:02x}:{k & 255:02x}", "dst_mac": "0a:58:0a:28:00:01",
            "src_ip": f"10.32.{k >> 8 & 255}.{k & 255}", "dst_ip": f"10.40.0.{1 + k % 200}",
            "proto": "tcp" if k % 3 else "udp", "sport": 1024 + k % 60000, "dport": 80 + k % 7,
            "packets": 10 + pps * t, "bytes": 1000 + pps * size * t, "last_seen": 1.7e9 + t,
            "path": "fastdp" if k % 5 else "sleeve", "via": via,
        })
    return {
        "version": "bench",
        "router": {"name": names[0], "nickname": "bench1", "short_id": 1, "uid": "1", "uptime_s": 100 + t,
                   "encryption": False, "port": 6783, "trusted_subnets": [], "overlays": ["fastdp", "sleeve"]},
        "peers": [{"name": n, "nickname": f"bench{i + 1}", "short_id": i + 1, "uid": str(i), "version": 1,
                   "reachable": True, "next_hop": None if i == 0 else n,
                   "connections": [{"name": m, "address": "192.0.2.1:6783", "outbound": True, "established": True}
                                   for m in names if m != n]} for i, n in enumerate(names)],
        "connections": [{"address": f"192.0.2.{i + 1}:6783", "peer": n, "nickname": f"bench{i + 1}",
                         "outbound": True, "state": "established", "info": "", "mode": "fastdp",
                         "mode_reason": None, "mtu": 1450, "rtt_ms": 0.3, "tx_bytes": 1000 * t,
                         "rx_bytes": 900 * t, "retry_at": None} for i, n in enumerate(names[1:], 1)],
        "routes": {"unicast": {n: n for n in names[1:]}, "broadcast": {}},
        "targets": [], "overlays": {},
        "datapath": {"flows": flows,
                     "peers": [{"peer": n, "tx_packets": 100 * t, "tx_bytes": 100_000 * t * (i + 1),
                                "rx_packets": 90 * t, "rx_bytes": 90_000 * t} for i, n in enumerate(names[1:])],
                     "drops": {"no_route": t, "ttl_exceeded": 0}},
        "ipam": None, "dns": None,
    }


def write_replay(path: Path, n_flows: int, frames: int = 10) -> None:
    path.write_text(json.dumps([synth_report(n_flows, t) for t in range(frames)]))


def in_process(path: Path, frames: int = 10) -> dict[str, float]:
    """Mean milliseconds per step over ``frames`` frames."""
    texts = [json.dumps(r) for r in json.loads(path.read_text())][:frames]
    dash = Dashboard()
    acc = {"decode": 0.0, "parse+rates": 0.0, "sort top 20": 0.0, "render 200x50": 0.0, "render 80x24": 0.0}
    for i, text in enumerate(texts):
        t0 = time.perf_counter()
        report = json.loads(text)
        t1 = time.perf_counter()
        dash.ingest(report, float(i))
        t2 = time.perf_counter()
        dash.flows(20)
        t3 = time.perf_counter()
        for (w, h), key in (((200, 50), "render 200x50"), ((80, 24), "render 80x24")):
            show = offscreen_printer(w, h)
            t = time.perf_counter()
            show(dash)
            acc[key] += time.perf_counter() - t
        acc["decode"] += t1 - t0
        acc["parse+rates"] += t2 - t1
        acc["sort top 20"] += t3 - t2
    return {k: 1000 * v / len(texts) for k, v in acc.items()}


def delta_decode(n_flows: int, changed: float, frames: int = 8) -> tuple[float, float]:
    """Median ms per frame to decode the whole report, and to decode the ``top`` op's answer
    (only the ``changed`` share of the flows) and fold it into the dashboard's copy
    (dashboard/flow_cache.py), measured interleaved on the same frames."""
    from weave_fdp.dashboard.flow_cache import FlowCache
    from weave_fdp.router import flow_delta

    cache = FlowCache()
    first = synth_report(n_flows, 0)
    cache.merge(json.loads(json.dumps(flow_delta.top_report(first, 1.0, None, None))), {"since": None}, 0.0)
    full_ms, delta_ms = [], []
    for t in range(1, frames + 1):
        rep = synth_report(n_flows, t)
        for k, f in enumerate(rep["datapath"]["flows"]):
            f["last_seen"] = 100.0 + t if k < n_flows * changed else 1.0
        whole = json.dumps(rep)
        answer = json.dumps(flow_delta.top_report(json.loads(whole), 100.0 + t, 99.5 + t, 0))
        t0 = time.perf_counter()
        json.loads(whole)
        t1 = time.perf_counter()
        cache.merge(json.loads(answer), {"since": 99.5 + t}, float(t))
        t2 = time.perf_counter()
        full_ms.append(1000 * (t1 - t0))
        delta_ms.append(1000 * (t2 - t1))
    return sorted(full_ms)[frames // 2], sorted(delta_ms)[frames // 2]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_cpu(path: Path, seconds: float, width: int = 200, height: int = 50) -> float:
    """Percent of one core used by `weave-fdp top --demo-file` at 1 Hz, after a 3 s warm-up."""
    sock = "wfdp-bench-" + secrets.token_hex(4)
    pidfile = path.with_suffix(".pid")
    argv = [sys.executable, "-m", "weave_fdp.cli.main", "top", "--demo-file", str(path)]
    cmd = f"echo $$ > {shlex.quote(str(pidfile))}; exec {shlex.join(argv)}"
    subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "b", "-x", str(width),
                    "-y", str(height), cmd], check=True, timeout=10)
    try:
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        time.sleep(3)
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu_seconds(pid), time.monotonic()
        return 100 * (c1 - c0) / (t1 - t0)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0, help="CPU measurement window of the live run")
    ap.add_argument("--no-live", action="store_true", help="only the in-process timings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"report_{args.flows}.json"
        write_replay(path, args.flows)
        size = json.dumps(synth_report(args.flows, 1)).encode()
        print(f"report with {args.flows} flows: {len(size) / 1e6:.1f} MB of JSON")
        for k, v in in_process(path).items():
            print(f"  {k:<14} {v:7.1f} ms/frame")
        for share in (0.01, 0.1, 0.5):
            whole, delta = delta_decode(args.flows, share)
            print(f"  top op, {share:.0%} of the flows changed: decode+merge {delta:.1f} ms/frame "
                  f"(the whole report {whole:.1f} ms, interleaved)")
        if not args.no_live:
            cpu = live_cpu(path, args.seconds)
            print(f"  weave-fdp top at 1 Hz, 200x50 in tmux: {cpu:.1f}% of one core over {args.seconds:g} s")


if __name__ == "__main__":
    main()
