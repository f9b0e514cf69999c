"""``weave-fdp bench dns``: weaveDNS beside dnsmasq, and how fast a new name travels.

One two-host lab with routers (``--dns-rate-limit 0``: the benchmark is one source).
On host 1 the same N names are served twice: by weaveDNS (169.254.53.53, from gossip:
the names are added on host 2) and by dnsmasq (169.254.53.54, from a hosts file), both
on host 1's weave bridge, both reached the same way from container h1-c1, where
dnsperf runs. Measured, interleaved (weave, dnsmasq, weave, dnsmasq, ...):

- max qps: dnsperf with 100 queries outstanding for ``seconds``;
- latency at a fixed load: dnsperf ``-Q`` at half of dnsmasq's median max qps (the
  floor the project holds itself to: 0.5x dnsmasq with p99 under 5 ms), every
  response's latency from dnsperf's verbose lines, p50/p99, ``rounds`` runs per server,
  interleaved too; the verdict (:func:`floor_verdict`) takes the median p99 of weaveDNS's
  runs and sets it beside dnsmasq's at the same rate (when dnsmasq misses 5 ms too, the
  machine is the limit, not the server);
- the highest rate each server holds with p99 under 5 ms: a bisection
  (:class:`Bisection`, ``search_steps`` short runs of ``search_seconds`` per server, the
  two servers' steps interleaved) between 0 and the server's best max-qps run; the
  second reading of the floor (:func:`search_verdict`): weaveDNS's highest such rate is
  at least 0.5x dnsmasq's max qps;
- each of those twice, by placement (``placements``): ``pinned`` (dnsperf on CPU 0, the
  server answering, weaveDNS's server process or dnsmasq, on CPU 1: neither waits for
  the other) and ``unpinned`` (the scheduler places them, as users run them);
- fixed-rate and search runs allow 1000 queries outstanding (``-q``), so a slow
  moment never throttles dnsperf's sending: the rate asked is the rate offered; a lost
  query counts as dnsperf's timeout (2 s) in the percentiles, so dropping queries (a full
  receive buffer) never flatters a p99; a search step fails only when two runs in a row
  fail;
- weaveDNS twice (``weave_answers``): ``weave``, as launched (with fastdp, the kernel
  answers the queries it can at the container's veth, the userspace server the rest), and
  ``weave_userspace``, the same router with its answers in the kernel turned off (the API
  op ``dns-kernel``), every query answered by the userspace server; each weaveDNS run
  records how many answers came from the kernel and how many from the server, so every
  figure says what it measured;
- attach to resolve: a poller in h2-c1 asks for a new name every 2 ms; the time from
  starting ``weave-fdp attach -h NAME`` on host 1 until h2-c1 gets the address (what a
  user waits: CLI start, link, duplicate address probe, name, gossip, answer), and from
  the moment the router added the name (attach's ``dns.added_at``: gossip and answer
  alone), over ``attaches`` containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weave_fdp.errors import DependencyMissing, FdpError
from weave_fdp.lab.lab import Lab, weave_command
from weave_fdp.plumbing.netns import popen_in_netns, run_in_netns

Echo = Callable[[str], None]
WEAVE_DNS = "169.254.53.53"
FLOOR_SHARE = 0.5          # of dnsmasq's max qps ...
FLOOR_P99_MS = 5.0         # ... carried with a p99 under this
LOST_SHARE = 0.001         # of the queries sent at that rate, at most
DNSMASQ = "169.254.53.54"
NAME_NET = "10.32.60"     # names bench-K -> 10.32.60.K (and 10.32.61.K beyond 250)
MAX_OUTSTANDING = 100     # dnsperf -q of the max-qps runs (closed loop)
RATE_OUTSTANDING = 1000   # dnsperf -q of the fixed-rate runs (open loop: the rate asked is the rate offered)
CLIENT_BUFFER_KB = 4096   # dnsperf -b: its socket buffers (the kernel caps them at net.core.[rw]mem_max)
TIMEOUT_S = 2             # dnsperf -t: a query unanswered this long is lost
PLACEMENTS = ("pinned", "unpinned")
CLIENT_CPU, SERVER_CPU = 0, 1


@dataclass
class Options:
    names: int = 100
    rounds: int = 3
    seconds: float = 5.0
    attaches: int = 20
    search_steps: int = 6
    search_seconds: float = 3.0
    placements: tuple[str, ...] = PLACEMENTS
    weave_answers: tuple[str, ...] = ("kernel", "userspace")


#: weaveDNS as measured: the bench key for each way its answers are given
WEAVE_KEYS = {"kernel": "weave", "userspace": "weave_userspace"}
WEAVE_ANSWERS = tuple(WEAVE_KEYS)


def check_tools() -> None:
    for tool, pkg in (("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base"), ("dig", "bind9-dnsutils"),
                      ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            raise DependencyMissing(f"{tool} is not installed", fix=f"apt-get install {pkg} (or make install)")


# ---------------------------------------------------------------- dnsperf output (pure)

def parse_dnsperf(text: str) -> dict[str, float]:
    """qps, sent, lost and mean latency (ms) from dnsperf's summary."""
    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        if not m:
            raise FdpError(f"dnsperf output lacks {pattern!r}: {text[-300:]!r}")
        return float(m.group(1))

    return {"qps": grab(r"Queries per second:\s+([\d.]+)"), "sent": grab(r"Queries sent:\s+(\d+)"),
            "lost": grab(r"Queries lost:\s+(\d+)"), "mean_ms": grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000}


def verbose_latencies(text: str) -> list[float]:
    """Latencies (ms) of every answered query in dnsperf ``-v`` output
    (lines ``> NOERROR name A 0.000123``)."""
    out = []
    for m in re.finditer(r"^> \S+ .* ([\d.]+)$", text, re.M):
        out.append(float(m.group(1)) * 1000)
    return out


def with_lost(latencies_ms: list[float], lost: int) -> list[float]:
    """The latencies with each lost query counted as dnsperf's timeout: a server that drops
    queries (a full receive buffer) gets no better percentiles than one that answers late."""
    return latencies_ms + [TIMEOUT_S * 1000.0] * max(0, lost)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def floor_verdict(dnsmasq_max_qps: float, weave_runs: list[dict[str, float]],
                  dnsmasq_runs: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """The floor, judged on one run's figures: weaveDNS carries FLOOR_SHARE of dnsmasq's max
    qps (median of its max-qps runs) with a p99 under FLOOR_P99_MS (median of the fixed-load
    runs) and at most LOST_SHARE lost. Runs: ``{"qps", "p99_ms", "lost"}`` each."""
    target = FLOOR_SHARE * dnsmasq_max_qps
    w_p99 = statistics.median(r["p99_ms"] for r in weave_runs)
    d_p99 = statistics.median(r["p99_ms"] for r in dnsmasq_runs)
    w_qps = statistics.median(r["qps"] for r in weave_runs)
    lost = max(r["lost"] for r in weave_runs)
    carried = w_qps >= 0.95 * target and lost <= LOST_SHARE * max(1.0, target * seconds)
    ok = carried and w_p99 < FLOOR_P99_MS
    why = ("" if ok else "; ".join(x for x in (
        "" if carried else f"carried {w_qps:.0f} of {target:.0f} qps with {lost:.0f} lost",
        "" if w_p99 < FLOOR_P99_MS else f"weaveDNS p99 {w_p99:.2f} ms >= {FLOOR_P99_MS:g} ms"
        + (f" (dnsmasq's at the same rate: {d_p99:.2f} ms, also over: the machine is the limit)"
           if d_p99 >= FLOOR_P99_MS else f" (dnsmasq's at the same rate: {d_p99:.2f} ms)")) if x))
    return {"ok": ok, "rule": f"weaveDNS carries {FLOOR_SHARE:g}x dnsmasq's max qps with p99 < {FLOOR_P99_MS:g} ms",
            "target_qps": round(target), "dnsmasq_max_qps": round(dnsmasq_max_qps),
            "weave_qps": round(w_qps), "weave_share_of_dnsmasq_max": round(w_qps / dnsmasq_max_qps, 3)
            if dnsmasq_max_qps else None,
            "weave_p99_ms": round(w_p99, 3), "dnsmasq_p99_ms": round(d_p99, 3),
            "weave_p99_runs_ms": [round(r["p99_ms"], 3) for r in weave_runs],
            "dnsmasq_p99_runs_ms": [round(r["p99_ms"], 3) for r in dnsmasq_runs],
            "p99_ratio_weave_to_dnsmasq": round(w_p99 / d_p99, 2) if d_p99 else None, "why_not": why}


def rate_holds(run: dict[str, float], rate: float, seconds: float) -> bool:
    """Did a fixed-rate run at ``rate`` hold the floor's latency: p99 under FLOOR_P99_MS, 95 %
    of the rate carried, at most LOST_SHARE of the queries lost? ``run``: ``{"qps", "p99_ms",
    "lost"}``."""
    return (run["p99_ms"] < FLOOR_P99_MS and run["qps"] >= 0.95 * rate
            and run["lost"] <= LOST_SHARE * max(1.0, rate * seconds))


class Bisection:
    """The highest rate in ``(0, hi]`` a server holds (a predicate that holds below some
    rate and not above), in ``steps`` probes: each probe halves the interval that holds the
    answer. :attr:`best` is the highest rate that held (0 when none did); the answer lies
    in ``[best, best + hi / 2**steps)`` when the predicate is monotonic."""

    def __init__(self, hi: float, steps: int) -> None:
        self.lo, self.hi, self.left = 0.0, float(hi), int(steps)
        self.best = 0.0
        self.probes: list[tuple[int, bool]] = []

    @property
    def done(self) -> bool:
        return self.left <= 0 or self.hi <= 1

    def rate(self) -> int:
        """The next rate to probe."""
        return max(1, round((self.lo + self.hi) / 2))

    def record(self, rate: float, held: bool) -> None:
        self.left -= 1
        self.probes.append((round(rate), held))
        if held:
            self.lo = max(self.lo, float(rate))
            self.best = max(self.best, float(rate))
        else:
            self.hi = min(self.hi, float(rate))


def search_verdict(dnsmasq_max_qps: float, weave_best: float, dnsmasq_best: float) -> dict[str, Any]:
    """The floor's second reading: weaveDNS's highest rate with p99 < FLOOR_P99_MS is at
    least FLOOR_SHARE of dnsmasq's max qps (dnsmasq's own highest such rate beside it)."""
    target = FLOOR_SHARE * dnsmasq_max_qps
    ok = weave_best >= target > 0
    return {"ok": ok, "rule": f"weaveDNS's highest rate with p99 < {FLOOR_P99_MS:g} ms >= "
                              f"{FLOOR_SHARE:g}x dnsmasq's max qps",
            "target_qps": round(target), "weave_best_qps": round(weave_best), "dnsmasq_best_qps": round(dnsmasq_best),
            "weave_best_share_of_dnsmasq_max": round(weave_best / dnsmasq_max_qps, 3) if dnsmasq_max_qps else None,
            "best_ratio_weave_to_dnsmasq": round(weave_best / dnsmasq_best, 2) if dnsmasq_best else None}


# ---------------------------------------------------------------- the lab

def snmp_counter(text: str, proto: str, field: str) -> int:
    """A counter of /proc/net/snmp (a header line and a value line per protocol)."""
    lines = [ln.split() for ln in text.splitlines() if ln.startswith(proto + ":")]
    if len(lines) < 2 or field not in lines[0]:
        raise FdpError(f"/proc/net/snmp lacks {proto} {field}")
    return int(lines[1][lines[0].index(field)])


def udp_rcvbuf_errors(ns: str) -> int:
    """UDP datagrams dropped in namespace ``ns`` because a socket's receive buffer was full."""
    return snmp_counter(run_in_netns(ns, ["cat", "/proc/net/snmp"]).stdout, "Udp", "RcvbufErrors")


def name_ip(k: int) -> str:
    return f"10.32.{60 + (k - 1) // 250}.{(k - 1) % 250 + 1}"


ADD_NAMES = r"""
import sys
from weave_fdp.router.client import RouterClient
c = RouterClient()
for k in range(1, int(sys.argv[1]) + 1):
    ip = f"10.32.{60 + (k - 1) // 250}.{(k - 1) % 250 + 1}"
    c.call("dns-add", addrs=[ip], hostname=f"bench-{k}")
"""

DNS_STATS = r"""
import json
from weave_fdp.router.client import RouterClient
dns = RouterClient().call("report")["dns"]
print(json.dumps({**dns["stats"], "kernel": dns.get("kernel")}))
"""

DNS_KERNEL = r"""
import json, sys
from weave_fdp.router.client import RouterClient
print(json.dumps(RouterClient().call("dns-kernel", on=sys.argv[1] == "on")))
"""

POLL = r"""
import socket, sys, time
from dnslib import DNSRecord, QTYPE
name, server = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.002)
q = DNSRecord.question(name)
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    s.sendto(q.pack(), (server, 53))
    try:
        while True:
            r = DNSRecord.parse(s.recv(4096))
            if r.header.id == q.header.id and any(rr.rtype == QTYPE.A for rr in r.rr):
                print(f"resolved {time.monotonic():.6f} {time.time():.6f}", flush=True)
                sys.exit(0)
    except (socket.timeout, OSError):
        pass
print("timeout", flush=True)
"""


class DnsBench:
    def __init__(self, opts: Options, echo: Echo) -> None:
        self.opts = opts
        self.echo = echo
        self.lab = Lab(prefix="b" + os.urandom(3).hex()[:5], hosts=2, topology="full", containers=1)
        self.tmp = Path(tempfile.mkdtemp(prefix="weave-fdp-bench-dns-"))
        self.dnsmasq: subprocess.Popen[Any] | None = None
        self.w = weave_command()
        self.pinned = False
        self.kernel_on: bool | None = None   # host 1's answers in the kernel, as last set

    def setup(self) -> None:
        lab, n = self.lab, self.opts.names
        self.echo(f"lab {lab.prefix}: 2 hosts, routers, {n} names")
        lab.up()
        lab.launch_routers(["--dns-rate-limit", "0"])
        for i in (1, 2):
            lab.exec(i, [*self.w, "attach", lab.container_cidr(i, 1), f"netns:{lab.container_ns(i, 1)}"])
        lab.exec(2, [sys.executable, "-c", ADD_NAMES, str(n)], timeout=300)
        hosts = self.tmp / "hosts"
        hosts.write_text("".join(f"{name_ip(k)} bench-{k}.weave.local\n" for k in range(1, n + 1)))
        queries = self.tmp / "queries"
        queries.write_text("".join(f"bench-{k}.weave.local A\n" for k in range(1, n + 1)))
        h1 = lab.host_ns(1)
        # dnsmasq on host 1's bridge, reached from the container exactly as weaveDNS is
        run_in_netns(h1, ["ip", "addr", "add", f"{DNSMASQ}/32", "dev", "weave"])
        run_in_netns(h1, ["ip", "route", "add", "10.32.0.0/12", "dev", "weave", "src", DNSMASQ])
        mac = json.loads(run_in_netns(h1, ["ip", "-j", "link", "show", "weave"]).stdout)[0]["address"]
        c1 = lab.container_ns(1, 1)
        run_in_netns(c1, ["ip", "route", "add", f"{DNSMASQ}/32", "dev", "ethwe"])
        run_in_netns(c1, ["ip", "neigh", "replace", DNSMASQ, "lladdr", mac, "dev", "ethwe", "nud", "permanent"])
        self.dnsmasq = popen_in_netns(h1, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                                           "--no-hosts", f"--addn-hosts={hosts}", "--local=/weave.local/",
                                           "--bind-interfaces", f"--listen-address={DNSMASQ}", "--port=53",
                                           "--pid-file=", "--user=root", "--cache-size=10000"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      # a session of its own, as the router's (launch starts it so):
                                      # with autogroup scheduling a server in the client's session
                                      # is woken in the client's slice, which flatters its latency
                                      start_new_session=True)
        last = f"bench-{n}.weave.local"
        for server in (WEAVE_DNS, DNSMASQ):
            deadline = time.monotonic() + 60
            while self._dig(server, last) != name_ip(n):
                if time.monotonic() > deadline:
                    raise FdpError(f"{server} does not answer {last} from the container after 60 s")
                time.sleep(0.2)

    def _dig(self, server: str, name: str) -> str:
        return run_in_netns(self.lab.container_ns(1, 1), ["dig", "+short", "+time=1", "+tries=1", f"@{server}", name],
                            check=False).stdout.strip()

    def dnsperf(self, server: str, seconds: float, qps: float | None = None, verbose: bool = False) -> str:
        argv = ["dnsperf", "-s", server, "-d", str(self.tmp / "queries"), "-l", f"{seconds:g}",
                "-q", str(RATE_OUTSTANDING if qps else MAX_OUTSTANDING), "-t", str(TIMEOUT_S), "-b", str(CLIENT_BUFFER_KB)]
        if qps:
            argv += ["-Q", str(int(qps))]
        if verbose:
            argv.append("-v")
        if self.pinned:
            argv = ["taskset", "-c", str(CLIENT_CPU), *argv]
        res = run_in_netns(self.lab.container_ns(1, 1), argv, check=False, timeout=seconds + 60)
        if res.returncode != 0:
            raise FdpError(f"dnsperf against {server} failed: {res.stderr.strip()[-300:]}")
        return res.stdout

    def fixed_rate(self, server: str, seconds: float, qps: float) -> dict[str, float]:
        """One run at ``qps``: achieved qps, lost, answers, p50 and p99 (ms), and where the lost
        ones were dropped: UDP receive buffers full at the client (dnsperf's container) or at the
        servers (host 1)."""
        namespaces = {"client_drops": self.lab.container_ns(1, 1), "server_drops": self.lab.host_ns(1)}
        before = {k: udp_rcvbuf_errors(ns) for k, ns in namespaces.items()}
        text = self.dnsperf(server, seconds, qps=qps, verbose=True)
        drops = {k: udp_rcvbuf_errors(ns) - before[k] for k, ns in namespaces.items()}
        lat = verbose_latencies(text)
        summ = parse_dnsperf(text)
        answers = len(lat)
        lat = with_lost(lat, int(summ["lost"]))
        return {"qps": round(summ["qps"]), "lost": summ["lost"], "answers": answers,
                "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3), **drops}

    def dns_stats(self) -> dict[str, Any]:
        """Host 1's weaveDNS counters (its router's report; ``kernel``: the kernel's, None without fastdp)."""
        return dict(json.loads(self.lab.exec(1, [sys.executable, "-c", DNS_STATS]).stdout))

    def answer_counts(self) -> tuple[int, int]:
        """(answered in the kernel, answered by the userspace server) on host 1 so far."""
        st = self.dns_stats()
        kernel = st.get("kernel") or {}
        return int(kernel.get("answered", 0)), int(st.get("answered", 0))

    def use(self, key: str) -> None:
        """Before a run against ``key``: host 1's answers in the kernel on for ``weave``,
        off for ``weave_userspace`` (dnsmasq: as they are)."""
        want = {"weave": True, "weave_userspace": False}.get(key)
        if want is None or want == self.kernel_on:
            return
        res = self.lab.exec(1, [sys.executable, "-c", DNS_KERNEL, "on" if want else "off"], check=False)
        if res.returncode != 0:
            if want:
                raise FdpError(f"weaveDNS cannot answer in the kernel here: {res.stderr.strip()[-300:]}",
                               fix="run bench dns where fastdp works (weave-fdp probe), or --weave-answers userspace")
        self.kernel_on = want

    def counted(self, key: str, run: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``run`` against ``key``, with the answers weaveDNS gave meanwhile from the kernel and
        from its server (``kernel_answers``, ``server_answers``; dnsmasq: none)."""
        self.use(key)
        if key == "dnsmasq":
            return run()
        k0, s0 = self.answer_counts()
        res = run()
        time.sleep(0.3)          # the server process reports its counters every 0.25 s
        k1, s1 = self.answer_counts()
        return {**res, "kernel_answers": k1 - k0, "server_answers": s1 - s0}

    def server_pids(self) -> dict[str, int]:
        """The processes that answer: weaveDNS's server process (from the router's report) and dnsmasq."""
        assert self.dnsmasq is not None
        return {"weave": int(self.dns_stats()["udp_process_pid"]), "dnsmasq": self.dnsmasq.pid}

    def place(self, placement: str) -> None:
        """``pinned``: both servers (every thread) on SERVER_CPU, dnsperf on CLIENT_CPU;
        ``unpinned``: all of them free on every CPU."""
        self.pinned = placement == "pinned"
        cpus = {SERVER_CPU} if self.pinned else set(range(os.cpu_count() or 1))
        for pid in self.server_pids().values():
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except ProcessLookupError:
                    pass                     # a thread that just ended

    def attach_to_resolve(self) -> dict[str, Any]:
        lab = self.lab
        from_start, from_added = [], []
        for k in range(self.opts.attaches):
            ns = lab.add_container(1)
            name = f"fresh-{k}.weave.local"
            poll = popen_in_netns(lab.container_ns(2, 1), [sys.executable, "-c", POLL, name, WEAVE_DNS],
                                  stdout=subprocess.PIPE, text=True)
            try:
                assert poll.stdout is not None
                if poll.stdout.readline().strip() != "ready":
                    raise FdpError("the resolving poller did not start")
                t0 = time.monotonic()
                out = lab.exec(1, [*self.w, "attach", "--json", f"10.32.70.{k + 1}/12", f"netns:{ns}", "-h", name])
                added_at = float(json.loads(out.stdout)["dns"]["added_at"])
                line = poll.stdout.readline().split()
                poll.wait(timeout=70)
            finally:
                if poll.poll() is None:
                    poll.kill()
                    poll.wait()
            if len(line) != 3 or line[0] != "resolved":
                raise FdpError(f"{name} never resolved on host 2")
            from_start.append((float(line[1]) - t0) * 1000)
            from_added.append((float(line[2]) - added_at) * 1000)
        return {"runs": len(from_start),
                "from_attach_start_ms": {"median": round(statistics.median(from_start), 1),
                                         "p99": round(percentile(from_start, 99), 1)},
                "from_name_added_ms": {"median": round(statistics.median(from_added), 1),
                                       "p99": round(percentile(from_added, 99), 1)}}

    def teardown(self) -> None:
        if self.dnsmasq is not None:
            self.dnsmasq.kill()
            self.dnsmasq.wait()
        self.lab.down()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _interleaved(rounds: int, keys: tuple[str, ...] = ("weave", "dnsmasq")) -> list[list[str]]:
    """Server order per round: each round starts one further along (two servers: weave first
    in even rounds, dnsmasq first in odd ones)."""
    n = len(keys)
    return [list(keys[r % n:] + keys[:r % n]) for r in range(rounds)]


def answered_by(runs: list[dict[str, float]]) -> dict[str, int]:
    """Answers weaveDNS gave over ``runs``, from the kernel and from its userspace server."""
    return {"kernel": sum(int(r.get("kernel_answers", 0)) for r in runs),
            "server": sum(int(r.get("server_answers", 0)) for r in runs)}


def _by(run: dict[str, float]) -> str:
    """`` [answered: N in the kernel, M by the server]`` for a weaveDNS run, else nothing."""
    if "kernel_answers" not in run:
        return ""
    return f" [answered: {run['kernel_answers']} in the kernel, {run['server_answers']} by the server]"


def measure_placement(bench: DnsBench, placement: str, opts: Options, echo: Echo) -> dict[str, Any]:
    """Max qps, fixed load at half of dnsmasq's and the p99 < 5 ms search, both servers
    interleaved, with the servers and dnsperf placed as ``placement`` says."""
    bench.place(placement)
    load_before = os.getloadavg()
    weaves = [WEAVE_KEYS[a] for a in opts.weave_answers]
    servers = {**{k: WEAVE_DNS for k in weaves}, "dnsmasq": DNSMASQ}
    keys = tuple(servers)
    maxq: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
    for r, order in enumerate(_interleaved(opts.rounds, keys)):
        for key in order:
            res = bench.counted(key, lambda key=key: parse_dnsperf(bench.dnsperf(servers[key], opts.seconds)))
            maxq[key].append(res)
            echo(f"{placement} round {r + 1}: {key:<15} max {res['qps']:9.0f} qps, lost {res['lost']:.0f}, "
                 f"mean {res['mean_ms']:.2f} ms" + _by(res))
    med = {k: statistics.median(x["qps"] for x in v) for k, v in maxq.items()}
    target = FLOOR_SHARE * med["dnsmasq"]
    fixed_runs: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
    for r, order in enumerate(_interleaved(opts.rounds, keys)):
        for key in order:
            run_ = bench.counted(key, lambda key=key: bench.fixed_rate(servers[key], opts.seconds, target))
            fixed_runs[key].append(run_)
            echo(f"{placement} round {r + 1} at {target:.0f} qps: {key:<15} p50 {run_['p50_ms']} ms, "
                 f"p99 {run_['p99_ms']} ms, lost {run_['lost']:.0f} (full buffers: client "
                 f"{run_['client_drops']}, server {run_['server_drops']})" + _by(run_))
    search = {k: Bisection(max(x["qps"] for x in maxq[k]), opts.search_steps) for k in servers}
    tries: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
    for r, order in enumerate(_interleaved(opts.search_steps, keys)):
        for key in order:
            b = search[key]
            if b.done:
                continue
            rate = b.rate()
            # a rate fails only when it fails twice in a row: one burst of the machine's other
            # work must not halve the answer (both servers get the second chance alike)
            for attempt in (1, 2):
                run_ = bench.counted(key, lambda key=key, rate=rate: bench.fixed_rate(servers[key],
                                                                                      opts.search_seconds, rate))
                held = rate_holds(run_, rate, opts.search_seconds)
                tries[key].append({"rate": rate, "held": held, "p99_ms": run_["p99_ms"], "lost": run_["lost"],
                                   "qps": run_["qps"], "kernel_answers": run_.get("kernel_answers", 0),
                                   "server_answers": run_.get("server_answers", 0)})
                echo(f"{placement} search {r + 1}.{attempt}: {key:<15} {rate} qps: p99 {run_['p99_ms']} ms, "
                     f"carried {run_['qps']}, lost {run_['lost']:.0f}: {'holds' if held else 'fails'}" + _by(run_))
                if held:
                    break
            b.record(rate, held)
    fixed = {k: {"qps": round(statistics.median(x["qps"] for x in v)), "lost": max(x["lost"] for x in v),
                 "answers": sum(int(x["answers"]) for x in v),
                 "p50_ms": round(statistics.median(x["p50_ms"] for x in v), 3),
                 "p99_ms": round(statistics.median(x["p99_ms"] for x in v), 3),
                 "p99_runs_ms": [x["p99_ms"] for x in v],
                 "client_drops": sum(int(x["client_drops"]) for x in v),
                 "server_drops": sum(int(x["server_drops"]) for x in v),
                 **({"answered_by": answered_by(v)} if k != "dnsmasq" else {})} for k, v in fixed_runs.items()}
    floors = {k: {"fixed": floor_verdict(med["dnsmasq"], fixed_runs[k], fixed_runs["dnsmasq"], opts.seconds),
                  "search": search_verdict(med["dnsmasq"], search[k].best, search["dnsmasq"].best),
                  "answered_by": answered_by(maxq[k] + fixed_runs[k] + tries[k])} for k in weaves}
    main = weaves[0]     # weaveDNS as launched when measured, else its userspace server
    return {
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "max_qps": {k: {"median": round(med[k]), "runs": [round(x["qps"]) for x in v],
                        "mean_ms": [round(x["mean_ms"], 3) for x in v],
                        **({"answered_by": answered_by(v)} if k != "dnsmasq" else {})} for k, v in maxq.items()},
        "weave_key": main,
        "ratio_weave_to_dnsmasq": round(med[main] / med["dnsmasq"], 2) if med["dnsmasq"] else None,
        "ratios_to_dnsmasq": {k: round(med[k] / med["dnsmasq"], 2) if med["dnsmasq"] else None for k in weaves},
        "fixed_load": {"qps": round(target), **fixed},
        "floor": floors[main]["fixed"],
        "search": {k: {"best_qps": round(b.best), "probes": b.probes, "runs": tries[k]} for k, b in search.items()},
        "floor_by_search": floors[main]["search"],
        "floors": floors,
    }


def run(opts: Options, echo: Echo | None = None) -> dict[str, Any]:
    echo = echo or (lambda s: None)
    check_tools()
    for p in opts.placements:
        if p not in PLACEMENTS:
            raise FdpError(f"unknown placement {p!r}; use {' or '.join(PLACEMENTS)}")
    if not opts.weave_answers or any(a not in WEAVE_KEYS for a in opts.weave_answers):
        raise FdpError(f"weave answers {opts.weave_answers!r}: use {' and/or '.join(WEAVE_ANSWERS)}")
    bench = DnsBench(opts, echo)
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        bench.setup()
        built = bench.dns_stats()["snapshots_built"]
        placements = {p: measure_placement(bench, p, opts, echo) for p in opts.placements}
        if bench.kernel_on is False:
            bench.use("weave")   # as launched again for what follows
        # the records do not change while dnsperf runs: no snapshot is built meanwhile
        built = bench.dns_stats()["snapshots_built"] - built
        load_mid = os.getloadavg()
        echo(f"attach on h1 -> resolves on h2, {opts.attaches} containers")
        attach = bench.attach_to_resolve()
    finally:
        bench.teardown()
    return {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "names": opts.names,
                 "rounds": opts.rounds, "seconds": opts.seconds, "search_steps": opts.search_steps,
                 "weave_answers": list(opts.weave_answers),
                 "search_seconds": opts.search_seconds, "elapsed_s": round(time.monotonic() - started),
                 "load_before": [round(x, 2) for x in load_before],
                 "load_after_dnsperf": [round(x, 2) for x in load_mid],
                 "snapshots_built_during_dnsperf": built},
        "placements": placements,
        "attach_to_resolve": attach,
    }
