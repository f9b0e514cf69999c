"""`make soak`: a 4-host lab under mixed traffic and churn for a long time (default 30 min),
sampling what each router holds every minute; fails when something grows beyond noise.

    python -m tests.chaos.soak [--minutes 30] [--interval 60] [--out docs]

Traffic: a continuous ping h1->h2 and h3->h4 (containers), an iperf3 burst of 2 s
between a rotating pair of containers every cycle. Churn: every cycle a second container
is attached on a rotating host and detached again, and every fifth cycle the underlay
link between two rotating hosts is cut for 3 s. Samples (per host, taken between cycles,
when no churn container is attached): router RSS, open fds, threads, BPF map entries,
links, tc BPF filters, lab namespaces. Written to <out>/soak.csv and plotted in
<out>/soak.png. Verdict: counts (links, filters, map entries, namespaces) must end where
the first sample after warm-up (1 min; map entries: 6 min, see ``verdict``) was, fds
within +4, threads within +2, map entries within +4 and RSS within +16 MiB of it.
"""

from __future__ import annotations

import argparse
import csv
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.chaos.chaoslab import ChaosLab
from weave_fdp.lab.lab import Lab

FIELDS = ["t_s", "host", "rss_kb", "fds", "threads", "map_entries", "links", "tc_bpf_filters", "namespaces"]
# the MAC ageing sweep runs every 30 s: about two churn cycles' learned MACs can wait for it
SLACK = {"fds": 4, "threads": 2, "rss_kb": 16 * 1024, "map_entries": 4}
WARMUP_S = 60                    # the first minute fills caches and maps
MAC_AGEING_S = 300               # learned MACs of detached churn containers stay this long (as a bridge's)


def _make_lab(labs: list[Lab]) -> Any:
    def factory(hosts: int, topology: str = "full", **kw: Any) -> Lab:
        lab = Lab(prefix="s" + secrets.token_hex(3)[:5], hosts=hosts, topology=topology, **kw)
        labs.append(lab)
        lab.up()
        return lab
    return factory


def cycle(cl: ChaosLab, n: int) -> None:
    """One round of churn and traffic (about 10 s)."""
    i = 1 + n % cl.hosts
    ns = cl.lab.container_ns(i, 2)
    cl.cli(i, "attach", f"10.32.{i}.200/12", f"netns:{ns}")
    a, b = 1 + n % cl.hosts, 1 + (n + 1) % cl.hosts
    srv = cl.lab.popen_container(b, 1, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        cl.lab.exec_container(a, 1, ["iperf3", "-c", cl.lab.container_ip(b, 1), "-t", "2", "--connect-timeout",
                                     "3000"], check=False, timeout=30)
    finally:
        srv.kill()
        srv.wait()
    if n % 5 == 4:
        x, y = 1 + (n // 5) % cl.hosts, 1 + (n // 5 + 2) % cl.hosts
        cl.lab.cut(x, y)
        time.sleep(3)
        cl.lab.restore(x, y)
    cl.cli(i, "detach", f"netns:{ns}")


def verdict(rows: list[dict[str, int]]) -> tuple[list[str], list[str]]:
    """(what grew beyond noise, what the run was too short to judge), per host: the first
    sample after the warm-up against the last. Map entries are judged only once learned
    MACs can have aged (every churn cycle attaches a container with a new MAC, which the
    other hosts learn and keep for MAC_AGEING_S after it is detached)."""
    bad, unjudged = [], []
    for host in sorted({r["host"] for r in rows}):
        mine = [r for r in rows if r["host"] == host]
        for k in FIELDS[2:]:
            warm = WARMUP_S + (MAC_AGEING_S if k == "map_entries" else 0)
            base = [r for r in mine if r["t_s"] >= warm]
            if len(base) < 2:
                unjudged.append(f"h{host} {k}")
                continue
            if base[-1][k] - base[0][k] > SLACK.get(k, 0):
                bad.append(f"h{host} {k}: {base[0][k]} -> {base[-1][k]}")
    return bad, unjudged


def plot(rows: list[dict[str, int]], path: Path, minutes: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("rss_kb", "router RSS (MiB)", 1 / 1024), ("fds", "open fds", 1), ("map_entries", "BPF map entries", 1),
              ("links", "links in the host", 1)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, (key, title, scale) in zip(axes.flat, panels):
        for host in sorted({r["host"] for r in rows}):
            pts = [(r["t_s"] / 60, r[key] * scale) for r in rows if r["host"] == host]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"h{host}")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"weave-fdp soak: 4 hosts, traffic and churn, {minutes:g} min")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--interval", type=float, default=60, help="seconds between samples")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args(argv)
    labs: list[Lab] = []
    rows: list[dict[str, int]] = []
    t_start = time.monotonic()
    try:
        cl = ChaosLab(_make_lab(labs), 4)
        for i in cl.all:
            cl.lab.add_container(i)
        pings = [cl.ping(1, 2, interval=0.1), cl.ping(3, 4, interval=0.1)]
        t0 = time.monotonic()
        n, next_sample = 0, 0.0
        while True:
            now = time.monotonic() - t0
            if now >= next_sample:
                for i in cl.all:
                    rows.append({"t_s": round(now), "host": i, **{k: v for k, v in cl.resources(i).items()}})
                print(f"[soak] {now / 60:5.1f} min: " + "  ".join(
                    f"h{r['host']} rss={r['rss_kb'] // 1024}M fds={r['fds']} maps={r['map_entries']} "
                    f"links={r['links']}" for r in rows[-cl.hosts:]), flush=True)
                next_sample += args.interval
                if now >= args.minutes * 60:
                    break
            cycle(cl, n)
            n += 1
        results = [p.stop() for p in pings]
    finally:
        for lab in labs:
            lab.down()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.out / "soak.png", args.minutes)
    sent, lost = sum(r[0] for r in results), sum(r[1] for r in results)
    bad, unjudged = verdict(rows)
    print(f"[soak] {n} churn cycles in {(time.monotonic() - t_start) / 60:.1f} min; pings {sent} sent, {lost} lost; "
          f"samples in {args.out / 'soak.csv'}, plot {args.out / 'soak.png'}")
    if unjudged:
        print(f"[soak] too short to judge (needs two samples after the warm-up): {', '.join(unjudged)}")
    if bad:
        print("[soak] FAIL: grew beyond noise: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("[soak] ok: nothing grew beyond noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
