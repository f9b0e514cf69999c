"""The datapath benchmark: every path built first, then measured interleaved, rounds of it.

Per round, for each test, each path in turn (the order rotates every round so no
path always runs first or right after another), between a client in container 1
of host 1 and a server in container 1 of host 2:

* ``iperf3`` TCP, 1 stream and 4 streams (``-P 4``): received bits/s;
* ``sockperf ping-pong --tcp`` (64-byte messages, ``--full-rtt``): RTT p50/p99;
* ``iperf3 -u -l 64 -b 0``: 64-byte UDP datagrams the server received, per second;
* CPU per GB: the whole machine's busy CPU time (/proc/stat: user + nice + system +
  irq + softirq, all CPUs) between the start and the end of each TCP client,
  divided by the bytes the server received. Sender, receiver, softirqs and any
  forwarder process are in it (so is whatever else the machine runs meanwhile:
  the idle load is measured before the first round and reported).

Medians over the rounds, ratios of medians against the kernel VXLAN path and the
underlay (results.py). Everything is torn down at the end, also on Ctrl-C.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import resource
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.bench import results
from weave_fdp.bench.paths import BenchPath, make_paths
from weave_fdp.errors import DependencyMissing, FdpError, UsageError
from weave_fdp.plumbing.netns import popen_in_netns, run_in_netns

log = logging.getLogger(__name__)

IPERF_PORT = 5201
SOCKPERF_PORT = 11111
TESTS = ("tcp1", "tcp4", "rr", "udp64")
TOOLS = {"iperf3": "iperf3", "sockperf": "sockperf", "ss": "iproute2"}

Echo = Callable[[str], None]
METHOD = ("client in container 1 of host 1, server in container 1 of host 2, one lab per path; "
          "per round each test on each path in turn (order rotated per round); medians over rounds; "
          "iperf3 TCP -P1/-P4 received bits/s; sockperf ping-pong --tcp -m 64 --full-rtt p50/p99; "
          "iperf3 -u -l 64 -b 0 packets the server received per second; CPU per GB = whole-machine "
          "busy time from /proc/stat (user+nice+system+irq+softirq) during each TCP run / GB received")


@dataclass
class Options:
    rounds: int = 3
    seconds: float = 3.0
    paths: list[str] = field(default_factory=lambda: list(results.PATHS))
    tests: list[str] = field(default_factory=lambda: list(TESTS))

    def check(self) -> None:
        if not 1 <= self.rounds <= 50:
            raise UsageError(f"--rounds {self.rounds} out of range", fix="use 1..50")
        if not 1 <= self.seconds <= 120:
            raise UsageError(f"--seconds {self.seconds:g} out of range", fix="use 1..120")
        bad = [p for p in self.paths if p not in results.PATHS]
        if bad or not self.paths:
            raise UsageError(f"unknown path {bad[0] if bad else '(none)'}",
                             fix="choose from " + ", ".join(results.PATHS))
        bad = [t for t in self.tests if t not in TESTS]
        if bad or not self.tests:
            raise UsageError(f"unknown test {bad[0] if bad else '(none)'}", fix="choose from " + ", ".join(TESTS))


def check_tools() -> None:
    import shutil

    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise DependencyMissing(f"{tool} not found on PATH", fix=f"install {pkg} (`make install`)")


def busy_seconds() -> float:
    with open("/proc/stat") as f:
        return results.proc_stat_busy(f.read(), os.sysconf("SC_CLK_TCK"))


# ---------------------------------------------------------------- one measurement

def _wait_listening(ns: str, port: int, udp: bool = False, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cp = run_in_netns(ns, ["ss", "-Hln" + ("u" if udp else "t"), f"sport = :{port}"], check=False)
        if cp.stdout.strip():
            return
        if time.monotonic() > deadline:
            raise FdpError(f"no server listening on port {port} in {ns} after {timeout:g} s")
        time.sleep(0.05)


def _stop(p: subprocess.Popen[Any]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _children_cpu() -> float:
    """CPU seconds (user + system) of every child this process has reaped so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _pid_cpu(pid: int) -> float:
    """utime + stime of a live process, seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ksoftirqd_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _process_cpu(extra_pids: list[int]) -> float:
    """CPU of the transfer's processes so far: reaped children (iperf3 client and server),
    the path's own processes (sleeve forwarders) and the ksoftirqd threads."""
    return _children_cpu() + sum(_pid_cpu(p) for p in extra_pids)


def iperf_tcp(path: BenchPath, seconds: float, streams: int) -> tuple[float, int, float, float]:
    """(bits/s received, bytes received, CPU s of the transfer's processes, machine busy CPU s)."""
    srv = popen_in_netns(path.server_ns, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = path.pids() + _ksoftirqd_pids()
    try:
        _wait_listening(path.server_ns, IPERF_PORT)
        c0, b0 = _process_cpu(extra), busy_seconds()
        cp = run_in_netns(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT), "-t",
                                           f"{seconds:g}", "-P", str(streams), "-J"],
                          check=False, timeout=seconds + 30)
        busy = busy_seconds() - b0
        srv.wait(5)  # reaped here, so its CPU time is in RUSAGE_CHILDREN
        own = _process_cpu(extra) - c0
        bps, nbytes = results.parse_iperf_tcp(cp.stdout)
        return bps, nbytes, own, busy
    finally:
        _stop(srv)


def iperf_udp64(path: BenchPath, seconds: float) -> float:
    """64-byte UDP datagrams per second the server received (sender unthrottled)."""
    srv = popen_in_netns(path.server_ns, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(path.server_ns, IPERF_PORT)
        cp = run_in_netns(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT), "-u",
                                           "-l", "64", "-b", "0", "-t", f"{seconds:g}", "-J",
                                           "--get-server-output"],
                          check=False, timeout=seconds + 30)
        pps, _ = results.parse_iperf_udp(cp.stdout)
        return pps
    finally:
        _stop(srv)


def sockperf_rr(path: BenchPath, seconds: float) -> dict[float, float]:
    """TCP ping-pong RTT percentiles (µs), 64-byte messages."""
    srv = popen_in_netns(path.server_ns, ["sockperf", "server", "--tcp", "-i", path.server_ip,
                                          "-p", str(SOCKPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(path.server_ns, SOCKPERF_PORT)
        cp = run_in_netns(path.client_ns, ["sockperf", "ping-pong", "--tcp", "-i", path.server_ip,
                                           "-p", str(SOCKPERF_PORT), "-t", f"{max(1, round(seconds))}",
                                           "-m", "64", "--full-rtt"],
                          check=False, timeout=seconds + 30)
        return results.parse_sockperf(cp.stdout + cp.stderr)
    finally:
        _stop(srv)


def measure(path: BenchPath, test: str, seconds: float, samples: results.Samples) -> str:
    """Run ``test`` on ``path`` once, add the samples; a short line for progress."""
    if test in ("tcp1", "tcp4"):
        streams = 1 if test == "tcp1" else 4
        bps, nbytes, own, busy = iperf_tcp(path, seconds, streams)
        samples.add(f"{test}_gbps", path.key, bps / 1e9)
        cpu_key = "cpu_s_per_gb" if streams == 1 else "cpu4_s_per_gb"
        samples.add(cpu_key, path.key, results.cpu_seconds_per_gb(own, nbytes))
        samples.add("machine_" + cpu_key, path.key, results.cpu_seconds_per_gb(busy, nbytes))
        return f"{bps / 1e9:.2f} Gbit/s"
    if test == "rr":
        pct = sockperf_rr(path, seconds)
        samples.add("rr_p50_us", path.key, pct.get(50.0))
        samples.add("rr_p99_us", path.key, pct.get(99.0))
        return f"p50 {pct.get(50.0, 0):.1f} µs"
    pps = iperf_udp64(path, seconds)
    samples.add("udp64_kpps", path.key, pps / 1e3)
    return f"{pps / 1e3:.0f} kpps"


# ---------------------------------------------------------------- the run

def idle_load(seconds: float = 1.0) -> float:
    """Busy CPUs (0..ncpu) while the benchmark itself does nothing: what else the machine runs."""
    b0, t0 = busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (busy_seconds() - b0) / (time.monotonic() - t0)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "host": platform.node()}


def run(opts: Options, echo: Echo | None = None) -> dict[str, Any]:
    """Build the paths, measure interleaved, tear down; the results as plain data."""
    opts.check()
    check_tools()
    say = echo or (lambda s: None)
    prefix = "bn" + secrets.token_hex(2)
    paths = make_paths(opts.paths, prefix)
    samples = results.Samples()
    started = time.monotonic()
    errors: list[str] = []
    try:
        for p in paths:
            t0 = time.monotonic()
            say(f"building {p.key} (lab {p.lab.prefix}) ...")
            p.build()
            say(f"  {p.key} ready in {time.monotonic() - t0:.1f} s, MTU {p.info.get('mtu')}")
        load = idle_load()
        say(f"idle load before measuring: {load:.2f} CPUs busy")
        for rnd in range(opts.rounds):
            order = paths[rnd % len(paths):] + paths[:rnd % len(paths)]
            for test in opts.tests:
                for p in order:
                    try:
                        line = measure(p, test, opts.seconds, samples)
                    except (FdpError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                        line = f"FAILED: {exc}"
                        errors.append(f"round {rnd + 1} {test} {p.key}: {exc}")
                        log.warning("round %d %s %s failed: %s", rnd + 1, test, p.key, exc)
                    say(f"round {rnd + 1}/{opts.rounds} {test:6s} {p.key:10s} {line}")
    finally:
        say("tearing down ...")
        for p in paths:
            try:
                p.close()
            except Exception:  # keep removing the others; the error is logged
                log.exception("cannot tear down %s (lab %s)", p.key, p.lab.prefix)
    keys = [p.key for p in paths]
    summary = results.summarize(samples, keys)
    return {
        "meta": {**machine(), "rounds": opts.rounds, "seconds": opts.seconds, "idle_load_cpus": round(load, 2),
                 "elapsed_s": round(time.monotonic() - started, 1), "method": METHOD},
        "paths": {p.key: {"title": results.PATHS[p.key], **p.info} for p in paths},
        "metrics": summary,
        "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in results.checks(summary)],
        "errors": errors,
    }
