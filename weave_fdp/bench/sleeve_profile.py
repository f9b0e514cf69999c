"""Where one TCP stream's time goes in the sleeve: per-thread CPU and wake-ups of both
forwarders (and of iperf3), optionally a ``perf`` profile of each forwarder thread.

    python -m weave_fdp.bench.sleeve_profile [--password] [--seconds 5] [--perf]
    make profile-sleeve [PROFILE_ARGS="--password --perf"]

Builds the ``sleeve`` (or ``sleeve_enc``) path of ``bench datapath`` (two hosts, one
container each, the standalone forwarder on each host), runs one iperf3 stream from
container 1 of host 1 to container 1 of host 2 (client pinned to CPU 0, server to
CPU 1, as the bench pins them), and after one second of warm-up samples every thread
of the forwarders and of iperf3 for ``--seconds``: CPU (user + system, % of one CPU)
and context switches per second, from ``/proc/PID/task/TID/{stat,status,comm}``. The
forwarders name their threads (``sleeve-data``: both directions, ``sleeve-timer``), so the
rows say which host each is: host 1's data thread captures the stream and receives its
ACKs, host 2's receives the stream and captures the ACKs. ``--perf`` also records
``perf record -g`` of both forwarders over the same seconds and prints, per thread,
the share of samples in Python, the kernel and libraries, and the top symbols.
Everything it built is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from weave_fdp.bench.paths import SLEEVE_PASSWORD, SleevePath
from weave_fdp.bench.sleeve_bound import PATHS as NULL_PATHS
from weave_fdp.errors import DependencyMissing, FdpError
from weave_fdp.plumbing.netns import popen_in_netns, stop_process


@dataclass(frozen=True)
class Sample:
    """One thread at one moment: CPU seconds so far and context switches so far."""

    name: str
    cpu_s: float
    switches: int


def parse_task(stat: str, status: str, comm: str, hz: int) -> Sample:
    """A thread's ``Sample`` from its ``stat``, ``status`` and ``comm`` files (pure)."""
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / hz          # utime + stime, in ticks
    kv = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    switches = int(kv.get("voluntary_ctxt_switches", 0)) + int(kv.get("nonvoluntary_ctxt_switches", 0))
    return Sample(comm.strip(), cpu, switches)


def rows(before: dict[str, Sample], after: dict[str, Sample], seconds: float) -> list[tuple[str, str, float, float]]:
    """(thread key, name, CPU % of one CPU, context switches per second) of the threads seen
    at both moments, busiest first (pure)."""
    out = []
    for key, b in before.items():
        a = after.get(key)
        if a is not None and seconds > 0:
            out.append((key, a.name, 100 * (a.cpu_s - b.cpu_s) / seconds, (a.switches - b.switches) / seconds))
    return sorted(out, key=lambda r: -r[2])


def sample(pids: dict[str, int]) -> dict[str, Sample]:
    """Every thread of ``pids`` (label -> pid), keyed ``label/tid``."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for label, pid in pids.items():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                with open(f"{base}/stat") as st, open(f"{base}/status") as ss, open(f"{base}/comm") as cm:
                    out[f"{label}/{tid}"] = parse_task(st.read(), ss.read(), cm.read(), hz)
            except OSError:
                continue     # the thread ended meanwhile
    return out


def _perf_summary(data: str, echo) -> None:
    """Per thread (comm): share of samples by DSO, then its top symbols."""
    def report(*args: str) -> str:
        return subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", *args],
                              capture_output=True, text=True, check=False).stdout
    echo("perf: samples by thread and object (% of all samples of both forwarders)")
    for line in report("--sort", "comm,dso").splitlines():
        if "%" in line and not line.startswith("#"):
            echo("  " + line.strip())
    for comm in ("sleeve-data", "null-receive"):
        echo(f"perf: top symbols of the {comm} threads (both hosts)")
        lines = [ln.strip() for ln in report("--comm", comm, "--sort", "dso,sym").splitlines()
                 if "%" in ln and not ln.startswith("#")]
        for line in lines[:12]:
            echo("  " + line)


def profile(*, password: bool, seconds: float, perf: bool, echo=print, null: str | None = None) -> dict:
    """Build the path, run the stream, print and return what was measured. ``null``: a null
    forwarder of ``bench sleeve-bound`` (``null_py``, ``null_py_procs``, ``null_c``, ...) instead
    of the sleeve."""
    if shutil.which("iperf3") is None:
        raise DependencyMissing("iperf3 not found on PATH", fix="install iperf3 (`make install`)")
    if perf and shutil.which("perf") is None:
        raise DependencyMissing("perf not found on PATH", fix="`make profile-sleeve` installs linux-perf")
    tmp = tempfile.mkdtemp(prefix="weave-fdp-sleeve-profile-")
    if null:
        from weave_fdp.bench.sleeve_bound import NullPath, compile_c  # noqa: PLC0415

        path: SleevePath = NullPath("sp" + secrets.token_hex(2), null,
                                    compile_c(Path(tmp)) if null.startswith("null_c") else None)
    else:
        path = SleevePath("sp" + secrets.token_hex(2), password=SLEEVE_PASSWORD if password else None)
    srv = cli = rec = None
    try:
        path.build()
        echo(f"{path.key}: MTU {path.info['mtu']}, forwarders {path.pids()}")
        srv = popen_in_netns(path.server_ns, ["taskset", "-c", "1", "iperf3", "-s", "-1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cli = popen_in_netns(path.client_ns, ["taskset", "-c", "0", "iperf3", "-c", path.server_ip, "-t",
                                              f"{seconds + 2:g}", "-J"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        fw = path.pids()
        pids = {**{f"h{i + 1}": p for i, p in enumerate(fw)}, "iperf3-server": srv.pid, "iperf3-client": cli.pid}
        if perf:
            rec = subprocess.Popen(["perf", "record", "-g", "-o", f"{tmp}/perf.data", "-p", ",".join(map(str, fw)),
                                    "--", "sleep", f"{seconds:g}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0, before = time.monotonic(), sample(pids)
        time.sleep(seconds)
        after, dt = sample(pids), time.monotonic() - t0
        out, _ = cli.communicate(timeout=seconds + 60)
        gbps = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        table = rows(before, after, dt)
        echo(f"one TCP stream: {gbps:.2f} Gbit/s; per thread over {dt:.1f} s (host 1 sends, host 2 receives):")
        for key, name, cpu, sw in table:
            if cpu >= 0.5 or sw >= 10:
                echo(f"  {key:24s} {name:16s} {cpu:5.1f}% CPU {sw:8.0f} switches/s")
        if rec is not None:
            rec.wait(timeout=seconds + 30)
            _perf_summary(f"{tmp}/perf.data", echo)
        return {"lab": path.lab.prefix, "gbps": gbps, "threads": [{"key": k, "name": n, "cpu_pct": c, "switches_per_s": s}
                                          for k, n, c, s in table]}
    finally:
        for p in (cli, srv):
            if p is not None:
                stop_process(p, 3)
        if rec is not None and rec.poll() is None:
            rec.terminate()
            rec.wait(10)
        path.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--password", action="store_true", help="the encrypted sleeve (AES-256-GCM pieces)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds measured (after 1 s of warm-up)")
    ap.add_argument("--perf", action="store_true", help="also perf record each forwarder thread")
    ap.add_argument("--null", choices=[k for k in NULL_PATHS if k.startswith("null_")],
                    help="a null forwarder of `bench sleeve-bound` instead of the sleeve")
    a = ap.parse_args(argv)
    if not 1 <= a.seconds <= 120:
        print("error: --seconds out of range; use 1..120", file=sys.stderr)
        return 2
    try:
        profile(password=a.password, seconds=a.seconds, perf=a.perf, null=a.null)
    except FdpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
