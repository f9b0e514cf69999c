"""A lab of routers to inject faults into, and the probes that measure what the faults did.

``ChaosLab`` builds hosts with one container each, launches real routers (fastdp, sleeve)
through the CLI, attaches the containers, and offers what every scenario needs: the
router's pid, its report, wait-for-condition loops that return how long they waited,
a continuous ping between containers that says how many probes a fault cost and the
longest outage, underlay loss with nftables ``numgen``, and a snapshot of the resources
a router holds (links, tc filters, BPF map entries, fds, RSS) to compare before/after.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from weave_fdp import paths
from weave_fdp.datapath import hooks
from weave_fdp.lab.lab import Lab, lab_namespaces, weave_command
from weave_fdp.plumbing.netns import netns_pids, run_in_netns

LOSS_TABLE = "chaosloss"


class Timeout(AssertionError):
    pass


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``fn`` until it returns something true; the seconds it took. Exceptions count as
    not yet (a router restarting refuses its API for a moment)."""
    t0 = time.monotonic()
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Timeout(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}"[:2000])
        time.sleep(interval)


class Ping:
    """``ping -D -i INTERVAL`` from one container to another until stopped. ``stop()`` gives the
    probes sent and lost, the longest outage (lost run x interval) and, for each run of lost
    probes, the wall-clock time it happened (between the replies around it), so a scenario
    can say in which phase of a fault the losses fell (``lost_between``)."""

    def __init__(self, lab: Lab, src: tuple[int, int], dst_ip: str, interval: float = 0.02) -> None:
        self.interval = interval
        # a file, not a pipe: nobody reads while it runs, and a full pipe would stop ping
        self.out = tempfile.TemporaryFile("w+")
        self.proc = lab.popen_container(*src, ["ping", "-D", "-n", "-i", str(interval), "-W", "1", dst_ip],
                                        stdout=self.out, stderr=subprocess.STDOUT, text=True)
        self.runs: list[tuple[float, int]] = []     # (time of the run, probes lost in it)

    def stop(self) -> tuple[int, int, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        self.out.seek(0)
        out = self.out.read()
        self.out.close()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise AssertionError(f"ping printed no summary: {out[-500:]}")
        sent, got = int(m.group(1)), int(m.group(2))
        replies = {int(q): float(t) for t, q in re.findall(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+) ttl", out, re.M)}
        seqs = sorted(replies)
        t_first = replies[seqs[0]] if seqs else time.time()
        t_last = replies[seqs[-1]] if seqs else time.time()
        prev = [(0, t_first - self.interval), *((q, replies[q]) for q in seqs)]
        nxt = [*((q, replies[q]) for q in seqs), (sent + 1, t_last + self.interval)]
        self.runs = [((ta + tb) / 2, b - a - 1) for (a, ta), (b, tb) in zip(prev, nxt) if b - a > 1]
        return sent, sent - got, round(max((n for _, n in self.runs), default=0) * self.interval, 2)

    def lost_between(self, t0: float, t1: float) -> int:
        """Probes lost in runs that happened between wall-clock times t0 and t1."""
        return sum(n for t, n in self.runs if t0 <= t < t1)


class ChaosLab:
    """``hosts`` hosts in a full mesh, routers launched, container 1 of each attached."""

    def __init__(self, make_lab: Callable[..., Lab], hosts: int = 2, *, launch_args: Sequence[str] = (),
                 env: dict[int, dict[str, str]] | None = None, topology: str = "full") -> None:
        self.lab = make_lab(hosts=hosts, topology=topology)
        self.hosts = hosts
        self.launch_args = list(launch_args)
        self.env = env or {}
        for i in self.all:
            self.lab.add_container(i)
        self.lab.state.routers = self.lab.routers = True   # lab.down resets them
        self.lab._save()
        for i in self.all:
            self.launch(i)
        for i in self.all:
            self.attach(i)
        self.wait_converged(60)

    @property
    def all(self) -> range:
        return range(1, self.hosts + 1)

    # ---------------------------------------------------------------- the CLI
    def cli(self, i: int, *args: str, check: bool = True, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        e = {**os.environ, **self.env.get(i, {}), **(env or {})}
        return self.lab.exec(i, [*weave_command(), *args], check=check, timeout=timeout, env=e)

    def launch(self, i: int, *extra: str, check: bool = True,
               prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        peers = [self.lab.host_ip(n) for n in self.lab.neighbours(i)]
        argv = [*prefix, *weave_command(), "launch", "--nickname", f"h{i}", *peers, *self.launch_args, *extra]
        e = {**os.environ, **self.env.get(i, {})}
        return self.lab.exec(i, argv, check=check, timeout=90, env=e)

    def attach(self, i: int) -> None:
        out = self.cli(i, "attach", self.lab.container_cidr(i, 1), f"netns:{self.lab.container_ns(i, 1)}").stdout
        assert out.strip() == self.lab.container_ip(i, 1), out

    def report(self, i: int) -> dict[str, Any]:
        return json.loads(self.cli(i, "report", timeout=20).stdout)

    def router_pid(self, i: int) -> int | None:
        for pid in netns_pids(self.lab.host_ns(i)):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"weave_fdp.router" in cmd:
                return pid
        return None

    def kill9(self, i: int) -> int:
        pid = self.router_pid(i)
        assert pid, f"no router in h{i}"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, f"router {pid} to die")
        return pid

    def log_tail(self, i: int, n: int = 30) -> str:
        logs = sorted((paths.RUNTIME_ROOT / self.lab.host_ns(i)).glob("*.log"))
        return "".join(p.read_text(errors="replace")[-4000:] for p in logs)[-3000:]

    # ---------------------------------------------------------------- what "recovered" means
    def mesh_ok(self, i: int, modes: tuple[str, ...] = ("fastdp",)) -> bool:
        """Host i sees every peer reachable, an established connection to each neighbour in
        one of ``modes``, and its container attached."""
        rep = self.report(i)
        peers = rep.get("peers", [])
        if len(peers) != self.hosts or not all(p.get("reachable") for p in peers):
            return False
        conns = json.loads(self.cli(i, "status", "connections", "--json", timeout=20).stdout)
        est = [c for c in conns if c.get("state") == "established"]
        if len(est) != len(self.lab.neighbours(i)) or any(c.get("mode") not in modes for c in est):
            return False
        ps = json.loads(self.cli(i, "ps", "--json", timeout=20).stdout)
        return [p["cidrs"] for p in ps] == [[self.lab.container_cidr(i, 1)]]

    def wait_converged(self, timeout: float, hosts: Sequence[int] | None = None,
                       modes: tuple[str, ...] = ("fastdp",)) -> float:
        t0 = time.monotonic()
        for i in hosts or self.all:
            try:
                wait_until(lambda: self.mesh_ok(i, modes), max(1.0, timeout - (time.monotonic() - t0)),
                           f"h{i} to see the whole mesh in {'/'.join(modes)} with its container attached")
            except Timeout as exc:
                raise Timeout(f"{exc}\nlog of h{i}:\n{self.log_tail(i)}") from None
        return round(time.monotonic() - t0, 2)

    def ping_ok(self, src: int, dst: int, count: int = 3) -> bool:
        return self.lab.exec_container(src, 1, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                                                self.lab.container_ip(dst, 1)], check=False).returncode == 0

    def ping(self, src: int = 1, dst: int = 2, interval: float = 0.02) -> Ping:
        return Ping(self.lab, (src, 1), self.lab.container_ip(dst, 1), interval)

    # ---------------------------------------------------------------- underlay loss (no netem here)
    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of every frame crossing the underlay bridge (nftables numgen)."""
        self.clear_loss()
        rules = (f"table bridge {LOSS_TABLE} {{\n chain loss {{\n  type filter hook forward priority -10; "
                 f"policy accept;\n  numgen random mod 100 < {int(percent)} counter drop\n }}\n}}\n")
        run_in_netns(self.lab.ul_ns, ["nft", "-f", "-"], input=rules, timeout=10)

    def clear_loss(self) -> None:
        run_in_netns(self.lab.ul_ns, ["nft", "delete", "table", "bridge", LOSS_TABLE], check=False, timeout=10)

    # ---------------------------------------------------------------- resources a router holds
    def resources(self, i: int) -> dict[str, int]:
        ns = self.lab.host_ns(i)
        links = run_in_netns(ns, ["ip", "-o", "link", "show"], timeout=10).stdout.splitlines()
        names = [ln.split(":")[1].strip().split("@")[0] for ln in links]
        filters = 0
        for dev in names:
            for d in hooks.DIRECTIONS:
                filters += len(hooks.programs(dev, direction=d, netns=ns))  # at tcx and as clsact filters
        rep = self.report(i)
        entries = rep.get("datapath", {}).get("entries", {})
        out = {"links": len(names), "tc_bpf_filters": filters,
               "map_entries": sum(v for v in entries.values() if isinstance(v, int)),
               "namespaces": len(lab_namespaces(self.lab.prefix))}
        pid = self.router_pid(i)
        if pid:
            out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            out["threads"] = len(os.listdir(f"/proc/{pid}/task"))
            status = Path(f"/proc/{pid}/status").read_text()
            out["rss_kb"] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        return out


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def leaks(before: dict[str, int], after: dict[str, int], slack: dict[str, int] | None = None) -> str:
    """The counts that grew beyond ``slack`` (RSS is judged by the caller): "" when none did."""
    slack = {"rss_kb": 1 << 30, **(slack or {})}
    grew = [f"{k} {before[k]}->{after.get(k)}" for k in before
            if k in after and after[k] - before[k] > slack.get(k, 0)]
    return ", ".join(grew)
