"""weaveDNS answers in the kernel, seen from real clients (dig, a UDP flood) in containers.

Two hosts: h1 runs fastdp (its containers' queries for names in the domain are answered
at their veths), h2 runs ``--no-fastdp`` (its userspace server answers everything), so
the same question asked on both compares the kernel's answer with the server's. h1's
router limits each source to 20 queries/s (bursts of 2000, the server's minimum). Both use
the domain ``corp.internal.`` and a TTL of 7 s, which the kernel's answers must follow.
Nothing leaves the lab's namespaces.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.netns.test_dns import status, wait_until
from weave_fdp.lab.lab import Lab, weave_command

pytestmark = pytest.mark.netns

W = weave_command()
RATE = 20                     # h1's --dns-rate-limit, queries/s per source
BURST = 2000                  # its burst: max(2000, 2 * RATE), as the server's bucket
POOL = [f"10.32.9.{k}" for k in range(1, 5)]
TTL = 7
DOMAIN_ARGS = ["--dns-domain", "corp.internal", "--dns-ttl", str(TTL)]   # the kernel follows both


class KernelLab:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def w(self, i: int, *args: str, check: bool = True) -> Any:
        return self.lab.exec(i, [*W, *args], check=check, timeout=60)

    def dig(self, i: int, j: int, *args: str) -> str:
        return self.lab.exec_container(i, j, ["dig", "+time=3", "+tries=2", *args], check=False, timeout=30).stdout

    def short(self, i: int, j: int, name: str, *args: str) -> list[str]:
        return [ln for ln in self.dig(i, j, "+short", name, *args).split() if ln]

    def dns(self, i: int) -> dict[str, Any]:
        return json.loads(self.w(i, "report").stdout)["dns"]


@pytest.fixture(scope="module")
def kl(make_lab_module: Callable[..., Lab]) -> Iterator[KernelLab]:
    lab = make_lab_module(hosts=2, topology="full", containers=2)
    lab.state.routers = lab.routers = True    # torn down with `reset` (the pins too)
    lab._save()
    lab.exec(1, [*W, "launch", "--nickname", "h1", "--dns-rate-limit", str(RATE), *DOMAIN_ARGS], timeout=60)
    lab.exec(2, [*W, "launch", "--nickname", "h2", "--no-fastdp", *DOMAIN_ARGS, lab.host_ip(1)], timeout=60)
    for i in (1, 2):
        for j in (1, 2):
            lab.exec(i, [*W, "attach", lab.container_cidr(i, j), f"netns:{lab.container_ns(i, j)}"])
    k = KernelLab(lab)
    k.w(1, "dns-add", *POOL, "-h", "pool.corp.internal")
    for i in (1, 2):
        wait_until(lambda i=i: sorted(k.short(i, 1, "pool.corp.internal")) == POOL, 30, f"pool on h{i}")
        wait_until(lambda i=i: k.short(i, 1, f"{lab.container_ns(3 - i, 1)}.corp.internal")
                   == [lab.container_ip(3 - i, 1)], 30, f"h{3 - i}'s container from h{i}")
    yield k


@pytest.fixture(scope="module")
def make_lab_module() -> Iterator[Callable[..., Lab]]:
    """One lab for the module's tests (building it costs ~20 s)."""
    from tests.netns.conftest import lab_factory

    yield from lab_factory()


def _server_queries(k: KernelLab) -> int:
    return int(k.dns(1)["stats"]["queries"])


def test_answers_come_from_the_kernel_not_the_server(kl: KernelLab) -> None:
    before = kl.dns(1)
    assert before["kernel"] is not None and before["kernel"]["names"] >= 5
    queries0 = int(before["stats"]["queries"])
    orders = set()
    for _ in range(12):
        got = kl.short(1, 1, "pool.corp.internal")
        assert sorted(got) == POOL, got
        orders.add(tuple(got))
    assert len(orders) > 1, f"always the same order: {orders}"       # shuffled in the kernel
    # one question only the server answers (AAAA): what reached the server is exactly what the
    # kernel passed on (the AAAA query, and dig's retry of it on a slow day), no A query
    aaaa = kl.dig(1, 1, "pool.corp.internal", "AAAA")
    assert status(aaaa) == "NOERROR" and "ANSWER: 0" in aaaa

    def passed(k: dict[str, Any]) -> int:
        return sum(v for f, v in k.items() if f.startswith("pass_"))

    wait_until(lambda: _server_queries(kl) - queries0 == passed(kl.dns(1)["kernel"]) - passed(before["kernel"]),
               10, "the server's count of what the kernel passed on")
    after = kl.dns(1)
    assert 1 <= int(after["stats"]["queries"]) - queries0 <= 2, "an A query reached the userspace server"
    assert after["kernel"]["answered"] - before["kernel"]["answered"] >= 12
    assert after["kernel"]["pass_question"] > before["kernel"]["pass_question"]
    assert "Answered in the kernel" in kl.w(1, "status").stdout
    assert "in the kernel" in kl.w(1, "status", "dns").stdout


def _fields(out: str) -> dict[str, Any]:
    """What a dig reply says, order of the answers aside."""
    flags = re.search(r"flags: ([a-z ]+);", out)
    answers = sorted(re.findall(r"^(\S+)\s+(\d+)\s+IN\s+A\s+(\S+)$", out, re.M))
    edns = re.search(r"EDNS: (.*)", out)
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
    return {"status": status(out), "flags": flags.group(1) if flags else None, "answers": answers,
            "edns": edns.group(1) if edns else None, "size": size.group(1) if size else None}


@pytest.mark.parametrize("args", [(), ("+noedns",), ("+norecurse",), ("+bufsize=1232",)],
                         ids=["dig's default (EDNS with a cookie)", "no EDNS", "no recursion", "EDNS 1232"])
def test_the_kernel_answers_what_the_server_answers(kl: KernelLab, args: tuple[str, ...]) -> None:
    for name in ("pool.corp.internal", "POOL.Corp.Internal", f"{kl.lab.container_ns(2, 2)}.corp.internal"):
        kernel = _fields(kl.dig(1, 2, name, *args))       # h1: fastdp
        server = _fields(kl.dig(2, 2, name, *args))       # h2: --no-fastdp, the userspace server
        assert kernel == server and kernel["answers"], (name, kernel, server)
        assert all(int(a[1]) == TTL for a in kernel["answers"]), kernel
    assert kl.dns(2)["kernel"] is None                     # no fastdp, no answers in the kernel


def test_a_detached_name_is_no_longer_answered(kl: KernelLab) -> None:
    lab = kl.lab
    ns = lab.add_container(1)
    lab.exec(1, [*W, "attach", "10.32.1.60/12", f"netns:{ns}", "-h", "leaving.corp.internal"])
    wait_until(lambda: kl.short(1, 1, "leaving.corp.internal") == ["10.32.1.60"], 20, "leaving resolves on h1")
    answered = kl.dns(1)["kernel"]["answered"]
    assert kl.short(1, 1, "leaving.corp.internal") == ["10.32.1.60"]
    assert kl.dns(1)["kernel"]["answered"] > answered           # from the kernel
    lab.exec(1, [*W, "detach", f"netns:{ns}"])
    wait_until(lambda: status(kl.dig(1, 1, "leaving.corp.internal")) == "NXDOMAIN", 10, "NXDOMAIN after detach")
    for _ in range(5):
        assert status(kl.dig(1, 1, "leaving.corp.internal")) == "NXDOMAIN"


FLOOD = r'''
import socket, sys, time
from dnslib import DNSRecord
n = int(sys.argv[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = DNSRecord.question("pool.corp.internal").pack()
t0 = time.monotonic()
for k in range(n):
    u.sendto(q, ("169.254.53.53", 53))
print(time.monotonic() - t0)
'''


def test_the_rate_limit_holds_for_answers_in_the_kernel(kl: KernelLab) -> None:
    """A source may not get more answers than --dns-rate-limit allows, whoever answers."""
    sent = 3 * BURST
    k0 = kl.dns(1)["kernel"]
    s0 = kl.dns(1)["stats"]
    out = kl.lab.exec_container(1, 2, [sys.executable, "-c", FLOOD, str(sent)], timeout=120)
    elapsed = float(out.stdout.split()[-1])
    k1 = kl.dns(1)["kernel"]
    let_through = sum(k1[f] - k0[f] for f in k1 if f.startswith("pass_") or f == "answered")
    dropped = k1["rate_limited"] - k0["rate_limited"]
    assert 0 < let_through + dropped <= sent     # (a veth's backlog may drop a few before tc)
    assert let_through <= BURST + RATE * (elapsed + 1), (let_through, elapsed)
    assert dropped > 0
    # the kernel kept the excess from the server: it had nothing to drop itself
    assert kl.dns(1)["stats"]["rate_limited"] == s0["rate_limited"]


def test_answers_in_the_kernel_turned_off_and_on(kl: KernelLab) -> None:
    """The API op dns-kernel (what bench dns uses): off, the server answers everything."""
    from weave_fdp.bench.dns import DNS_KERNEL

    def toggle(state: str) -> dict[str, Any]:
        return json.loads(kl.lab.exec(1, [sys.executable, "-c", DNS_KERNEL, state]).stdout)

    try:
        assert toggle("off") == {"on": False, "names": 0}
        before = kl.dns(1)
        assert sorted(kl.short(1, 1, "pool.corp.internal")) == POOL
        wait_until(lambda: _server_queries(kl) >= int(before["stats"]["queries"]) + 1, 10, "the server's answer")
        assert kl.dns(1)["kernel"]["answered"] == before["kernel"]["answered"]
    finally:
        state = toggle("on")
    assert state["on"] and state["names"] >= 5
    answered = kl.dns(1)["kernel"]["answered"]
    assert sorted(kl.short(1, 1, "pool.corp.internal")) == POOL
    assert kl.dns(1)["kernel"]["answered"] > answered


def test_a_stopped_router_or_no_dns_answers_nothing_in_the_kernel(kl: KernelLab) -> None:
    """(Last: it stops h1's router.) The kernel never answers for a router that is not
    serving: not after `stop` (the programs stay attached, the names would be stale), not
    after a launch with --no-dns."""
    assert sorted(kl.short(1, 1, "pool.corp.internal")) == POOL
    kl.w(1, "stop")
    out = kl.dig(1, 1, "+time=1", "+tries=1", "pool.corp.internal")
    assert "status:" not in out, out
    kl.w(1, "launch", "--nickname", "h1", "--no-dns")
    assert kl.dns(1) is None
    out = kl.dig(1, 1, "+time=1", "+tries=1", "pool.corp.internal")
    assert "status:" not in out, out
