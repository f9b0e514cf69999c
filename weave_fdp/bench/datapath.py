"""The datapath benchmark: every path built first, then measured interleaved, rounds of it.

Per round, for each test, each path in turn (the order rotates every round so no
path always runs first or right after another), between a client in container 1
of host 1 and a server in container 1 of host 2:

* ``iperf3`` TCP, 1 stream and 4 streams (``-P 4``): received bits/s (client pinned to
  CPU 0, server to CPU 1, as for the UDP test); 1 stream again unpinned (``tcp1u``), as a
  user runs it, where the scheduler places client, server and their softirq work;
* ``sockperf ping-pong --tcp`` (64-byte messages, ``--full-rtt``): RTT p50/p99, client
  and server pinned to one CPU, then to two (see ``sockperf_rr``), each the best of
  ``RR_TRIES`` short runs (see there);
* ``iperf3 -u -l 64 -b 0``: 64-byte UDP datagrams the server received, per second;
* CPU per GB: CPU time (user + system) of the transfer's processes during each TCP
  run — the iperf3 client and server (getrusage of reaped children), the path's
  forwarder processes (sleeve) and the ksoftirqd threads (/proc/PID/stat) —
  divided by the bytes the server received. This kernel accounts CPU time by
  ticks without IRQ_TIME_ACCOUNTING, so softirq work (the whole forwarding path
  of a veth-connected lab runs in the sender's softirq) is charged to the task
  it interrupts and is in the figure. The whole machine's busy time over the
  same run (/proc/stat) is kept too (``machine_*`` in --json), but on a shared
  machine it mostly measures everyone else: the idle load is reported.

Medians over the rounds, ratios of medians against the kernel VXLAN path and the
underlay (results.py). Everything is torn down at the end, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import resource
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.bench import results
from weave_fdp.bench.paths import BenchPath, make_paths
from weave_fdp.errors import DependencyMissing, FdpError, UsageError
from weave_fdp.plumbing.netns import popen_in_netns, run_in_netns, stop_process

log = logging.getLogger(__name__)

IPERF_PORT = 5201
SOCKPERF_PORT = 11111
TESTS = ("tcp1", "tcp1u", "tcp4", "rr", "udp64")
# Measurements per path per round. TCP 1 stream is the noisiest row on a shared 2-CPU
# machine and the one the aim is about: twice per round, the paths in turn and
# then in reverse (A B | B A), so each pair of runs of fastdp and the kernel VXLAN path
# is back to back and neither always goes first. The same for its unpinned twin (tcp1u).
REPEATS = {"tcp1": 2, "tcp1u": 2}
# TCP RR: the run is cut into this many short ones (new connection each), and the one
# with the lowest p50 is the round's. This machine gives each new connection one of two
# speeds at random, whatever the path (the same underlay lab 7.8-8.7 µs or 11.6-15 µs
# from one 1-second run to the next, docs/PERFORMANCE.md), and a round that pairs one
# path's fast connection with another's slow one measures the draw, not the paths.
RR_TRIES = 3
TOOLS = {"iperf3": "iperf3", "sockperf": "sockperf", "ss": "iproute2", "taskset": "util-linux"}

Echo = Callable[[str], None]
METHOD = ("client in container 1 of host 1, server in container 1 of host 2, one lab per path; "
          "per round each test on each path in turn (order rotated per round; TCP 1 stream twice per "
          "round, the second time in reverse order: A B | B A); medians over runs; floors judged on the "
          "paired ratio (median of per-run fastdp/VXLAN ratios of runs made back to back); "
          "iperf3 (client pinned to CPU 0, server to CPU 1) TCP -P1/-P4 received bits/s, and -P1 again "
          "unpinned (tcp1u, placed by the scheduler; also twice per round, A B | B A); "
          "sockperf ping-pong --tcp -m 64 --full-rtt p50/p99, client and server pinned to one CPU, "
          f"then to two, each the best (lowest p50) of {RR_TRIES} runs sharing the run time; "
          "iperf3 -u -l 64 -b 0 packets the server received per second; CPU per GB = CPU time "
          "(user+system, tick-based accounting, so softirq work in a task's context is in it) of the "
          "iperf3 client and server, the path's forwarder processes and ksoftirqd during each TCP run "
          "/ GB received; machine_* in --json: whole-machine busy time from /proc/stat instead")


@dataclass
class Options:
    rounds: int = 3
    seconds: float = 3.0
    paths: list[str] = field(default_factory=lambda: list(results.PATHS))
    tests: list[str] = field(default_factory=lambda: list(TESTS))
    repeats: dict[str, int] = field(default_factory=lambda: dict(REPEATS))

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
        for test, n in self.repeats.items():
            if test not in TESTS or not 1 <= n <= 10:
                raise UsageError(f"repeats {test}={n} out of range", fix=f"use a test of {', '.join(TESTS)} and 1..10")


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


def _pin(cpu: int) -> list[str]:
    """argv prefix pinning a command to ``cpu`` (sender on CPU 0, receiver on CPU 1: with veths the
    sender's CPU carries the whole forwarding path, the receiver's copies to user space); nothing
    on a one-CPU machine."""
    n = os.cpu_count() or 1
    return ["taskset", "-c", str(cpu % n)] if n >= 2 else []


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


def iperf_tcp(path: BenchPath, seconds: float, streams: int,
              pinned: bool = True) -> tuple[float, int, float, float]:
    """(bits/s received, bytes received, CPU s of the transfer's processes, machine busy CPU s);
    ``pinned=False``: neither end pinned, the scheduler decides (as users run it)."""
    pin_c, pin_s = (_pin(0), _pin(1)) if pinned else ([], [])
    srv = popen_in_netns(path.server_ns, [*pin_s, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = path.pids() + _ksoftirqd_pids()
    try:
        _wait_listening(path.server_ns, IPERF_PORT)
        c0, b0 = _process_cpu(extra), busy_seconds()
        cp = run_in_netns(path.client_ns, [*pin_c, "iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT), "-t",
                                           f"{seconds:g}", "-P", str(streams), "-J"],
                          check=False, timeout=seconds + 30)
        busy = busy_seconds() - b0
        srv.wait(5)  # reaped here, so its CPU time is in RUSAGE_CHILDREN
        own = _process_cpu(extra) - c0
        bps, nbytes = results.parse_iperf_tcp(cp.stdout)
        return bps, nbytes, own, busy
    finally:
        stop_process(srv, 3)


def iperf_udp64(path: BenchPath, seconds: float) -> float:
    """64-byte UDP datagrams per second the server received (sender unthrottled)."""
    srv = popen_in_netns(path.server_ns, [*_pin(1), "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(path.server_ns, IPERF_PORT)
        cp = run_in_netns(path.client_ns, [*_pin(0), "iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT), "-u",
                                           "-l", "64", "-b", "0", "-t", f"{seconds:g}", "-J",
                                           "--get-server-output"],
                          check=False, timeout=seconds + 30)
        pps, _ = results.parse_iperf_udp(cp.stdout)
        return pps
    finally:
        stop_process(srv, 3)


def sockperf_rr(path: BenchPath, seconds: float, cpus: tuple[int, int] = (0, 0)) -> dict[float, float]:
    """TCP ping-pong RTT percentiles (µs), 64-byte messages; ``cpus``: (client, server) CPU to pin to.

    Pinned because the placement decides the figure more than any path does: on one
    CPU a round trip never waits for a CPU to wake, on two every message wakes the
    other (a halted vCPU takes tens of µs to wake), and unpinned runs land on either.
    """
    srv = popen_in_netns(path.server_ns, [*_pin(cpus[1]), "sockperf", "server", "--tcp",
                                          "-i", path.server_ip, "-p", str(SOCKPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(path.server_ns, SOCKPERF_PORT)
        cp = run_in_netns(path.client_ns, [*_pin(cpus[0]), "sockperf", "ping-pong", "--tcp",
                                           "-i", path.server_ip, "-p", str(SOCKPERF_PORT),
                                           "-t", f"{max(1, round(seconds))}", "-m", "64", "--full-rtt"],
                          check=False, timeout=seconds + 30)
        return results.parse_sockperf(cp.stdout + cp.stderr)
    finally:
        stop_process(srv, 3)


def best_rr(path: BenchPath, seconds: float, cpus: tuple[int, int], tries: int = RR_TRIES) -> dict[float, float]:
    """``sockperf_rr`` as ``tries`` runs sharing ``seconds`` (1 s each at least): the percentiles
    of the run with the lowest p50 (see RR_TRIES)."""
    runs = [sockperf_rr(path, max(1.0, seconds / tries), cpus) for _ in range(max(1, tries))]
    return min(runs, key=lambda pct: pct.get(50.0, float("inf")))


def measure(path: BenchPath, test: str, seconds: float, samples: results.Samples) -> str:
    """Run ``test`` on ``path`` once, add the samples; a short line for progress."""
    if test in ("tcp1", "tcp1u", "tcp4"):
        streams = 4 if test == "tcp4" else 1
        bps, nbytes, own, busy = iperf_tcp(path, seconds, streams, pinned=test != "tcp1u")
        samples.add(f"{test}_gbps", path.key, bps / 1e9)
        cpu_key = {"tcp1": "cpu_s_per_gb", "tcp1u": "cpuu_s_per_gb", "tcp4": "cpu4_s_per_gb"}[test]
        samples.add(cpu_key, path.key, results.cpu_seconds_per_gb(own, nbytes))
        samples.add("machine_" + cpu_key, path.key, results.cpu_seconds_per_gb(busy, nbytes))
        return f"{bps / 1e9:.2f} Gbit/s"
    if test == "rr":
        pct = best_rr(path, seconds, (0, 0))
        samples.add("rr_p50_us", path.key, pct.get(50.0))
        samples.add("rr_p99_us", path.key, pct.get(99.0))
        line = f"p50 {pct.get(50.0, 0):.1f} µs on 1 CPU"
        if (os.cpu_count() or 1) >= 2:
            pct = best_rr(path, seconds, (0, 1))
            samples.add("rr2_p50_us", path.key, pct.get(50.0))
            samples.add("rr2_p99_us", path.key, pct.get(99.0))
            line += f", {pct.get(50.0, 0):.1f} µs on 2"
        return line
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


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while tearing down: a second one must not leave labs behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def build_paths(paths: list[Any], say: Echo) -> float:
    """Build every path's lab, saying how long each took; then the idle load (CPUs busy)
    measured before the first run."""
    for p in paths:
        t0 = time.monotonic()
        say(f"building {p.key} (lab {p.lab.prefix}) ...")
        p.build()
        say(f"  {p.key} ready in {time.monotonic() - t0:.1f} s, MTU {p.info.get('mtu')}")
    return idle_load()


def close_paths(paths: list[Any], say: Echo) -> None:
    """Tear every path's lab down, shielded from Ctrl-C; one that fails keeps none of the
    others from going (the error is logged and said)."""
    say("tearing down ...")
    with _shielded():
        for p in paths:
            try:
                p.close()
            except Exception as exc:  # keep removing the others
                log.warning("cannot tear down %s (lab %s): %s", p.key, p.lab.prefix, exc, exc_info=True)
                say(f"cannot tear down {p.key} (lab {p.lab.prefix}): {exc}")


def rotated(paths: list[Any], rnd: int) -> list[Any]:
    """Round ``rnd``'s order: the paths rotated by one each round, so none always goes first."""
    k = rnd % len(paths)
    return paths[k:] + paths[:k]


def run_order(order: list[Any], repeats: int) -> list[Any]:
    """The paths of one round for one test: ``order``, then reversed, alternately, ``repeats`` times."""
    out: list[Any] = []
    for k in range(max(1, repeats)):
        out.extend(order if k % 2 == 0 else order[::-1])
    return out


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
        load = build_paths(paths, say)
        say(f"idle load before measuring: {load:.2f} CPUs busy")
        for rnd in range(opts.rounds):
            order = rotated(paths, rnd)
            for test in opts.tests:
                for p in run_order(order, opts.repeats.get(test, 1)):
                    try:
                        line = measure(p, test, opts.seconds, samples)
                    except (FdpError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                        line = f"FAILED: {exc}"
                        errors.append(f"round {rnd + 1} {test} {p.key}: {exc}")
                        log.warning("round %d %s %s failed: %s", rnd + 1, test, p.key, exc)
                    say(f"round {rnd + 1}/{opts.rounds} {test:6s} {p.key:10s} {line}")
    finally:
        close_paths(paths, say)
    keys = [p.key for p in paths]
    summary = results.summarize(samples, keys)
    return {
        "meta": {**machine(), "rounds": opts.rounds, "seconds": opts.seconds, "idle_load_cpus": round(load, 2),
                 "repeats": {t: opts.repeats.get(t, 1) for t in opts.tests},
                 "elapsed_s": round(time.monotonic() - started, 1), "method": METHOD},
        "paths": {p.key: {"title": results.PATHS[p.key], **p.info} for p in paths},
        "metrics": summary,
        "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in results.checks(summary)],
        "errors": errors,
    }
