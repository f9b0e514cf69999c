"""``bench sleeve-bound``: how fast could any userspace forwarder carry one TCP stream here?

Builds, in the lab shape ``bench datapath`` uses for its ``sleeve`` path (two hosts,
bridge ``weave``, ``vethwe-bridge``/``vethwe-pcap`` captured with a packet socket, one
container each with ``ethwe`` at the sleeve's MTU and ``gso_max_size``), one lab per path:

* ``underlay``       host to host on the lab underlay, no overlay: the limit;
* ``sleeve``         the real sleeve, plain (``python -m weave_fdp.datapath.sleeve.run``);
  ``sleeve_enc`` (not in the default set) the same with a password (AES-256-GCM pieces);
  ``sleeve_base``, ``sleeve_enc_base``: the same from another source tree (``--baseline DIR``,
  through ``PYTHONPATH``), for an A/B paired run by run;
* ``null_py``        the null forwarder in Python (``null_forwarder.py``): capture read →
  UDP GSO ``sendmsg`` of the frame in PMTU pieces; UDP GRO read → join → inject; both
  directions; capture and receive in two threads of one process, as the sleeve;
* ``null_py_procs``  the same with capture and receive in two processes (no GIL between);
* ``null_py_gcm``    (not in the default set) ``null_py`` sealing every frame once with
  AES-256-GCM (the sleeve's own ``Sealer``/``Opener``): the ceiling of an encrypted one;
* ``null_py_ring``, ``null_c_ring`` (not in the default set) capture from a TPACKET_V2
  receive ring (``PACKET_VNET_HDR`` works with rings) instead of ``recv``;
* ``null_py_spin``   (not in the default set) ``null_py`` whose threads, once a read
  finds nothing, try again without waiting for ``SPIN_US`` before they sleep;
* ``null_c``         the same null forwarder in C (``null_forwarder.c``, compiled with gcc
  into a temporary directory at the start), two threads;
* ``null_c_procs``   (not in the default set) the C one in two processes;
* ``null_c_gcm``     (not in the default set) the C one sealing every frame once with
  OpenSSL's AES-256-GCM (libcrypto, loaded with dlopen; the fastest here): the ceiling of an
  encrypted one.

Then, per round, one iperf3 TCP stream through every path, pinned as ``bench datapath``
pins it (client on CPU 0, server on CPU 1) and unpinned, each twice per round in
order and reversed (A B | B A, the order rotating from round to round): throughput,
share of the underlay paired run by run, CPU seconds per GB of the whole machine
(/proc/stat over the run) and of the transfer's processes (iperf3, the forwarders,
ksoftirqd: ``bench datapath``'s CPU per GB, steadier on a shared machine), and the
whole machine's context switches per GB. What it tells: the ceiling of any Python
forwarder of this shape on this machine, of any userspace forwarder (C), and what
the real sleeve's logic costs over the null one. See docs/SLEEVE.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from weave_fdp.bench import bound_results as br
from weave_fdp.bench import results
from weave_fdp.bench.datapath import (IPERF_PORT, _ksoftirqd_pids, _pin, _process_cpu, _wait_listening,
                                      check_tools, run_order)
from weave_fdp.bench.paths import HOSTS, SLEEVE_PASSWORD, BenchPath, SleevePath, UnderlayPath
from weave_fdp.errors import DependencyMissing, FdpError, UsageError
from weave_fdp.plumbing.netns import popen_in_netns, run_in_netns, stop_process

PATHS = {
    "underlay": "underlay (no overlay)",
    "sleeve": "sleeve, plain",
    "sleeve_enc": "sleeve, encrypted",
    "sleeve_base": "sleeve, plain, the baseline tree",
    "sleeve_enc_base": "sleeve, encrypted, the baseline tree",
    "null_py": "null forwarder, Python, 2 threads",
    "null_py_procs": "null forwarder, Python, 2 processes",
    "null_py_gcm": "null forwarder, Python, 2 threads, AES-256-GCM (the sleeve's Sealer/Opener)",
    "null_py_ring": "null forwarder, Python, 2 threads, capture from a TPACKET_V2 ring",
    "null_py_spin": "null forwarder, Python, 2 threads, each spinning 50 µs before it sleeps",
    "null_c": "null forwarder, C, 2 threads",
    "null_c_procs": "null forwarder, C, 2 processes",
    "null_c_ring": "null forwarder, C, 2 threads, capture from a TPACKET_V2 ring",
    "null_c_gcm": "null forwarder, C, 2 threads, AES-256-GCM (OpenSSL)",
}
DEFAULT_PATHS = ("underlay", "sleeve", "null_py", "null_py_procs", "null_c")
COMPARE = (("sleeve", "sleeve_base"), ("sleeve_enc", "sleeve_enc_base"), ("sleeve", "null_py"), ("sleeve_enc", "null_py_gcm"), ("null_py_gcm", "null_py"),
           ("null_py_procs", "null_py"), ("null_py_spin", "null_py"), ("null_py_ring", "null_py"),
           ("null_py", "null_c"), ("sleeve", "null_c"), ("null_c_ring", "null_c"), ("null_c_procs", "null_c"),
           ("null_c_gcm", "null_c"), ("sleeve_enc", "null_c_gcm"))
SPIN_US = 50
C_SOURCE = Path(__file__).with_name("null_forwarder.c")
Echo = Callable[[str], None]


@dataclass
class Options:
    rounds: int = 3
    seconds: float = 3.0
    paths: list[str] = field(default_factory=lambda: list(DEFAULT_PATHS))
    placements: list[str] = field(default_factory=lambda: list(br.PLACEMENTS))
    baseline: str | None = None     # a source tree: its sleeve too, as sleeve_base / sleeve_enc_base

    def check(self) -> None:
        if not 1 <= self.rounds <= 50:
            raise UsageError(f"--rounds {self.rounds} out of range", fix="use 1..50")
        if not 1 <= self.seconds <= 120:
            raise UsageError(f"--seconds {self.seconds:g} out of range", fix="use 1..120")
        bad = [p for p in self.paths if p not in PATHS]
        if bad or not self.paths:
            raise UsageError(f"unknown path {bad[0] if bad else '(none)'}", fix="choose from " + ", ".join(PATHS))
        if "underlay" not in self.paths:
            raise UsageError("the underlay path is missing", fix="keep underlay in --paths: shares are of it")
        if any(p.endswith("_base") for p in self.paths) and not self.baseline:
            raise UsageError("a baseline path without a baseline tree", fix="pass --baseline DIR")
        if self.baseline and not os.path.isdir(os.path.join(self.baseline, "weave_fdp")):
            raise UsageError(f"{self.baseline} is not a weave-fdp source tree", fix="pass the directory holding weave_fdp/")
        bad = [p for p in self.placements if p not in br.PLACEMENTS]
        if bad or not self.placements:
            raise UsageError(f"unknown placement {bad[0] if bad else '(none)'}",
                             fix="choose from " + ", ".join(br.PLACEMENTS))


def compile_c(outdir: Path) -> Path:
    """The C null forwarder built into ``outdir``; its path."""
    if shutil.which("gcc") is None:
        raise DependencyMissing("gcc not found on PATH", fix="install gcc (`WEAVE_FDP_BOUND=1 make install`)")
    exe = outdir / "null_forwarder"
    cp = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(exe), str(C_SOURCE)],
                        capture_output=True, text=True, timeout=120)
    if cp.returncode != 0:
        raise FdpError(f"cannot compile {C_SOURCE.name}: {cp.stderr.strip()[-300:]}",
                       fix="install gcc and libc6-dev (`WEAVE_FDP_BOUND=1 make install`)")
    return exe


class NullPath(SleevePath):
    """The sleeve path's lab with a null forwarder on each host instead of the sleeve."""

    def __init__(self, prefix: str, key: str, c_exe: Path | None = None) -> None:
        super().__init__(prefix, big_frames=False)     # the null forwarders take 64 KiB at most
        self.key = key
        self.c_exe = c_exe

    def _argv(self, me: int, peer_ip: str, seg: int) -> list[str]:
        procs = self.key.endswith("_procs")
        if self.key.startswith("null_c"):
            assert self.c_exe is not None
            gcm = ["gcm", f"h{me}", f"h{3 - me}"] if self.key.endswith("_gcm") else []
            return [str(self.c_exe), "vethwe-pcap", peer_ip, str(seg), *(["procs"] if procs else []),
                    *(["ring"] if self.key.endswith("_ring") else []), *gcm]
        gcm = ["--aesgcm", f"h{me}", f"h{3 - me}"] if self.key.endswith("_gcm") else []
        return [sys.executable, "-m", "weave_fdp.bench.null_forwarder", "--peer", peer_ip, "--seg", str(seg),
                *(["--procs"] if procs else []), *(["--spin-us", str(SPIN_US)] if self.key.endswith("_spin") else []),
                *(["--ring"] if self.key.endswith("_ring") else []), *gcm]

    def pids(self) -> list[int]:
        """The forwarders and, in two processes, their children (whose CPU time a parent's
        /proc/PID/stat leaves out until it reaps them)."""
        out = super().pids()
        for pid in list(out):
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                continue
        return out

    def _build(self) -> None:
        from weave_fdp.datapath.sleeve import wire
        from weave_fdp.datapath.sleeve.link import PeerLink
        from weave_fdp.datapath.sleeve.pmtu import PmtuProber

        self._plumb()
        seg = self.lab.mtu - wire.IP_UDP_OVERHEAD
        for i in HOSTS:
            with open(self.tmp / f"null-h{i}.log", "wb") as out:
                self.procs[i] = self.lab.popen(i, self._argv(i, self.lab.host_ip(3 - i), seg),
                                               stdout=out, stderr=subprocess.STDOUT)
        # The MTU the sleeve gives containers on this underlay (what its PMTU discovery
        # settles on), so the stream's segments and super-frames are the sleeve's.
        mtu = PeerLink(b"", ("", 0), None, None, PmtuProber(self.lab.mtu)).mtu()
        self._finish(mtu - (wire.SEAL_OVERHEAD if self.key.endswith("_gcm") else 0))   # sealed: as the sleeve
        self._wait_through()

    def _wait_through(self, timeout: float = 20) -> None:
        """Wait until container 1 of host 1 reaches container 1 of host 2 through the forwarders."""
        deadline = time.monotonic() + timeout
        while True:
            for i, p in self.procs.items():
                if p.poll() is not None:
                    raise FdpError(f"the {self.key} forwarder of {self.lab.host_ns(i)} exited {p.returncode}",
                                   fix=f"see {self.tmp / f'null-h{i}.log'}")
            cp = run_in_netns(self.client_ns, ["ping", "-c1", "-W1", self.server_ip], check=False)
            if cp.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise FdpError(f"no ping through the {self.key} forwarders of lab {self.lab.prefix} "
                               f"within {timeout:g} s", fix=f"see the logs in {self.tmp}")


def make_paths(keys: list[str], prefix: str, c_exe: Path | None, baseline: str | None = None) -> list[BenchPath]:
    out: list[BenchPath] = []
    for n, k in enumerate(keys):
        pre = f"{prefix}{n}"
        if k == "underlay":
            out.append(UnderlayPath(pre))
        elif k.startswith("sleeve"):
            sp = SleevePath(pre, password=SLEEVE_PASSWORD if k.startswith("sleeve_enc") else None,
                            pythonpath=baseline if k.endswith("_base") else None)
            sp.key = k
            out.append(sp)
        else:
            out.append(NullPath(pre, k, c_exe))
    return out


def _stat() -> tuple[float, int]:
    with open("/proc/stat") as f:
        text = f.read()
    return results.proc_stat_busy(text, os.sysconf("SC_CLK_TCK")), br.proc_stat_ctxt(text)


def iperf_once(path: BenchPath, seconds: float, pinned: bool, rnd: int, rep: int) -> br.Run:
    """One iperf3 TCP stream through ``path``, with the whole machine's CPU and switches over it."""
    pin_c, pin_s = (_pin(0), _pin(1)) if pinned else ([], [])
    srv = popen_in_netns(path.server_ns, [*pin_s, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(path.server_ns, IPERF_PORT)
        load1 = os.getloadavg()[0]
        extra = path.pids() + _ksoftirqd_pids()
        own0 = _process_cpu(extra)
        b0, c0 = _stat()
        cp = run_in_netns(path.client_ns, [*pin_c, "iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT),
                                           "-t", f"{seconds:g}", "-P", "1", "-J"], check=False, timeout=seconds + 30)
        b1, c1 = _stat()
        srv.wait(5)        # reaped here, so its CPU time is in RUSAGE_CHILDREN
        own = _process_cpu(extra) - own0
        bps, nbytes = results.parse_iperf_tcp(cp.stdout)
        return br.Run(path.key, "pinned" if pinned else "unpinned", rnd, rep, bps / 1e9, nbytes, b1 - b0, c1 - c0,
                      load1, own)
    finally:
        stop_process(srv, 3)


def run(opts: Options, echo: Echo | None = None) -> dict[str, Any]:
    """Build the paths, measure interleaved, tear down; the results as plain data."""
    import secrets

    from weave_fdp.bench.datapath import build_paths, close_paths, machine, rotated

    opts.check()
    check_tools()
    say = echo or (lambda s: None)
    tmp = Path(tempfile.mkdtemp(prefix="weave-fdp-bound-"))
    runs: list[br.Run] = []
    errors: list[str] = []
    paths: list[BenchPath] = []
    started = time.monotonic()
    load = 0.0
    try:
        c_exe = compile_c(tmp) if any(k.startswith("null_c") for k in opts.paths) else None
        paths = make_paths(opts.paths, "sb" + secrets.token_hex(2), c_exe, opts.baseline)
        load = build_paths(paths, say)
        say(f"idle load before measuring: {load:.2f} CPUs busy; load average {os.getloadavg()[0]:.2f}")
        for rnd in range(opts.rounds):
            order = rotated(paths, rnd)
            for placement in opts.placements:
                for n, p in enumerate(run_order(order, 2)):
                    rep = n // len(order)
                    try:
                        r = iperf_once(p, opts.seconds, placement == "pinned", rnd, rep)
                        runs.append(r)
                        line = (f"{r.gbps:.2f} Gbit/s, {r.cpu_s_per_gb or 0:.2f} CPU s/GB, "
                                f"{(r.ctxt_per_gb or 0) / 1e3:.0f} k switches/GB, load {r.load1:.2f}")
                    except (FdpError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                        line = f"FAILED: {exc}"
                        errors.append(f"round {rnd + 1} {placement} {p.key}: {exc}")
                    say(f"round {rnd + 1}/{opts.rounds} {placement:8s} {p.key:14s} {line}")
    finally:
        close_paths(paths, say)
        shutil.rmtree(tmp, ignore_errors=True)
    summary = br.summarize(runs, opts.paths, compare=COMPARE)
    return {
        "meta": {**machine(), "rounds": opts.rounds, "seconds": opts.seconds, "idle_load_cpus": round(load, 2),
                 "loadavg_end": round(os.getloadavg()[0], 2), "elapsed_s": round(time.monotonic() - started, 1),
                 "labs": [p.lab.prefix for p in paths]},
        "paths": {k: PATHS[k] for k in opts.paths},
        "summary": summary,
        "runs": [asdict(r) for r in runs],
        "errors": errors,
    }


def report(res: dict[str, Any]) -> list[str]:
    """The result as Markdown lines (the table of docs/SLEEVE.md)."""
    m = res["meta"]
    head = [f"{m['date']}, {m['cpus']} CPUs, kernel {m['kernel']}; {m['rounds']} rounds × {m['seconds']:g} s, "
            f"every path twice per round and placement (A B | B A); idle load {m['idle_load_cpus']} CPUs busy, "
            f"load average at the end {m['loadavg_end']}", ""]
    titles = {k: PATHS[k] for k in PATHS if k in res["paths"]}
    return head + br.table(res["summary"], titles) + [f"error: {e}" for e in res["errors"]]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--paths", default=",".join(DEFAULT_PATHS), help="comma separated: " + ", ".join(PATHS))
    ap.add_argument("--placements", default="pinned,unpinned")
    ap.add_argument("--baseline", help="a source tree whose sleeve runs as sleeve_base / sleeve_enc_base")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    opts = Options(rounds=a.rounds, seconds=a.seconds, paths=[p for p in a.paths.split(",") if p],
                   placements=[p for p in a.placements.split(",") if p], baseline=a.baseline)
    try:
        res = run(opts, echo=None if a.json else (lambda s: print(s, file=sys.stderr, flush=True)))
    except FdpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(json.dumps(res, indent=1) if a.json else "\n".join(report(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
