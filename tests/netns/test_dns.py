"""weaveDNS with real clients (dig, getent) in container namespaces of a three-host lab.

One lab for the module: routers on three hosts, two containers each; five containers
share the name ``svc``; the hosts' upstream resolver (their /etc/netns/HOST/resolv.conf)
is a dnsmasq in the lab's underlay namespace (h2's names an address where nothing
answers). Nothing leaves the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import unique_prefix
from weave_fdp.lab.lab import Lab, weave_command
from weave_fdp.plumbing.netns import popen_in_netns, run_in_netns

pytestmark = pytest.mark.netns

W = weave_command()
DNS = "169.254.53.53"
UPSTREAM = "192.0.2.250"        # dnsmasq on the underlay bridge
DEAD_UPSTREAM = "192.0.2.251"   # nothing there
SHARED = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]   # the five containers named svc


def wait_until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:   # a router restarting, a name not there yet: keep polling
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class DnsLab:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def w(self, i: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(i, [*W, *args], check=check, timeout=60)

    def dig(self, i: int, j: int, *args: str) -> str:
        return self.lab.exec_container(i, j, ["dig", "+time=3", "+tries=2", *args], check=False, timeout=30).stdout

    def short(self, i: int, j: int, name: str, *args: str) -> list[str]:
        return [ln for ln in self.dig(i, j, "+short", name, *args).split() if ln]

    def name(self, i: int, j: int) -> str:
        return self.lab.container_ns(i, j)

    def ip(self, i: int, j: int) -> str:
        return self.lab.container_ip(i, j)


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"   # a zombie is gone
    except (FileNotFoundError, ProcessLookupError):
        return True


def status(out: str) -> str:
    m = re.search(r"status: (\w+)", out)
    return m.group(1) if m else f"no answer: {out[-300:]}"


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsLab]:
    lab = Lab(prefix=unique_prefix(), hosts=3, topology="full", containers=2)
    dnsmasq: subprocess.Popen[Any] | None = None
    try:
        lab.up()
        # the hosts' upstream resolvers: seen by their routers as /etc/resolv.conf
        for i, server in ((1, UPSTREAM), (2, DEAD_UPSTREAM), (3, UPSTREAM)):
            d = Path("/etc/netns") / lab.host_ns(i)
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(f"nameserver {server}\n")
        run_in_netns(lab.ul_ns, ["ip", "addr", "add", f"{UPSTREAM}/24", "dev", "ul0"])
        dnsmasq = popen_in_netns(lab.ul_ns, ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                                             "--bind-interfaces", f"--listen-address={UPSTREAM}", "--port=53",
                                             "--address=/upstream.test/192.0.2.123", "--pid-file=", "--conf-file=/dev/null",
                                             "--user=root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.launch_routers()
        for i in range(1, 4):
            for j in range(1, 3):
                extra = ["--name", "svc"] if (i, j) in SHARED else []
                lab.exec(i, [*W, "attach", lab.container_cidr(i, j), f"netns:{lab.container_ns(i, j)}", *extra])
        d = DnsLab(lab)
        wait_until(lambda: len(json.loads(d.w(1, "status", "dns", "--json").stdout)) == 6, 30, "six names on h1")
        yield d
    finally:
        if dnsmasq is not None:
            dnsmasq.kill()
            dnsmasq.wait()
        lab.down()


def test_names_resolve_across_hosts_with_dig_and_getent(dns: DnsLab) -> None:
    other = dns.name(3, 2)
    assert wait_until(lambda: dns.short(1, 1, f"{other}.weave.local") == [dns.ip(3, 2)], 20, "dig across hosts")
    out = dns.lab.exec_container(2, 1, ["getent", "hosts", other], check=False).stdout   # through the search domain
    assert out.split()[:2] == [dns.ip(3, 2), f"{other}.weave.local"], out
    conf = Path(f"/etc/netns/{dns.name(1, 1)}/resolv.conf").read_text()
    assert f"nameserver {DNS}" in conf and "search weave.local" in conf
    st = dns.w(1, "status").stdout
    assert "Service: dns" in st and "Domain: weave.local." in st and f"Upstream: {UPSTREAM}" in st, st


def test_five_containers_share_a_name_every_answer_holds_all_in_varying_order(dns: DnsLab) -> None:
    want = sorted(dns.ip(i, j) for i, j in SHARED)
    wait_until(lambda: sorted(dns.short(3, 2, "svc.weave.local")) == want, 20, "all five from h3")
    for client in ((1, 1), (2, 2), (3, 2)):
        orders = set()
        for _ in range(8):
            got = dns.short(*client, "svc.weave.local")
            assert sorted(got) == want, (client, got)
            orders.add(tuple(got))
        assert len(orders) > 1, f"{client}: always the same order {orders}"


def test_case_ptr_and_rcodes(dns: DnsLab) -> None:
    assert len(dns.short(1, 2, "SvC.WeAvE.LoCaL")) == 5
    ptr = dns.short(1, 2, "-x", dns.ip(3, 2))
    assert ptr == [f"{dns.name(3, 2)}.weave.local."]
    assert status(dns.dig(1, 2, "nothing-here.weave.local")) == "NXDOMAIN"
    mx = dns.dig(1, 2, "svc.weave.local", "MX")
    assert status(mx) == "NOERROR" and "ANSWER: 0" in mx
    aaaa = dns.dig(1, 2, "svc.weave.local", "AAAA")
    assert status(aaaa) == "NOERROR" and "ANSWER: 0" in aaaa


def test_upstream_forwarding_and_an_unreachable_upstream(dns: DnsLab) -> None:
    assert dns.short(1, 1, "upstream.test") == ["192.0.2.123"]
    assert dns.short(3, 1, "UPSTREAM.test") == ["192.0.2.123"]
    t0 = time.monotonic()
    out = dns.lab.exec_container(2, 1, ["dig", "+time=10", "+tries=1", "upstream.test"], check=False).stdout
    assert status(out) == "SERVFAIL"
    assert time.monotonic() - t0 < 9


def test_fifty_addresses_udp_truncated_tcp_whole_and_edns_size(dns: DnsLab) -> None:
    ips = [f"10.32.200.{k}" for k in range(1, 51)]
    dns.w(1, "dns-add", *ips, "-h", "big.weave.local")
    wait_until(lambda: len(dns.short(2, 1, "big.weave.local", "+tcp")) == 50, 20, "50 addresses on h2")
    plain = dns.dig(2, 1, "+noedns", "+ignore", "big.weave.local")
    assert " tc" in plain.split("flags:")[1].split(";")[0]
    n_plain = int(re.search(r"ANSWER: (\d+)", plain).group(1))
    edns = dns.dig(2, 1, "+bufsize=700", "+ignore", "big.weave.local")
    n_edns = int(re.search(r"ANSWER: (\d+)", edns).group(1))
    assert " tc" in edns.split("flags:")[1].split(";")[0]
    assert 0 < n_plain < n_edns < 50
    assert int(re.search(r"MSG SIZE\s+rcvd: (\d+)", edns).group(1)) <= 700
    assert sorted(dns.short(2, 1, "big.weave.local", "+tcp"), key=lambda a: int(a.rsplit(".", 1)[1])) == ips
    assert len(dns.short(2, 1, "big.weave.local")) == 50     # dig retries over TCP on TC
    dns.w(1, "dns-remove", *ips, "-h", "big.weave.local")
    wait_until(lambda: status(dns.dig(2, 1, "big.weave.local")) == "NXDOMAIN", 20, "big removed")


def test_removal_after_detach_and_after_kill_9(dns: DnsLab) -> None:
    lab = dns.lab
    ns = lab.add_container(2)
    lab.exec(2, [*W, "attach", "10.32.2.60/12", f"netns:{ns}", "-h", "leaving.weave.local"])
    wait_until(lambda: dns.short(1, 1, "leaving.weave.local") == ["10.32.2.60"], 20, "leaving resolves on h1")
    lab.exec(2, [*W, "detach", f"netns:{ns}"])
    wait_until(lambda: status(dns.dig(1, 1, "leaving.weave.local")) == "NXDOMAIN", 15, "removed after detach")
    assert not Path(f"/etc/netns/{ns}/resolv.conf").exists()
    # a container whose process is killed: its namespace goes, so does its name
    proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"), 5, "unshare")
        lab.exec(2, [*W, "attach", "10.32.2.61/12", f"pid:{proc.pid}", "-h", "killed"])
        wait_until(lambda: dns.short(3, 1, "killed.weave.local") == ["10.32.2.61"], 20, "killed resolves on h3")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_until(lambda: status(dns.dig(3, 1, "killed.weave.local")) == "NXDOMAIN", 15, "removed after kill -9")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_names_survive_a_router_restart(dns: DnsLab) -> None:
    name = dns.name(3, 2)
    dns.w(3, "dns-add", "10.32.3.77", "-h", "extra.weave.local")
    wait_until(lambda: dns.short(1, 1, "extra.weave.local") == ["10.32.3.77"], 20, "extra on h1")
    server = json.loads(dns.w(3, "report").stdout)["dns"]["stats"]["udp_process_pid"]
    assert server and Path(f"/proc/{server}").exists()          # the DNS server process
    dns.w(3, "stop")
    assert process_gone(server), "the DNS server process outlived its router"
    # the peer left: its names go from the others once the mesh forgets it
    wait_until(lambda: status(dns.dig(1, 1, "extra.weave.local")) == "NXDOMAIN", 30, "h3's names purged on h1")
    dns.w(3, "launch", "--nickname", "h3", dns.lab.host_ip(1), dns.lab.host_ip(2))
    local = json.loads(dns.w(3, "status", "dns", "--json").stdout)
    assert {"extra.weave.local.", f"{name}.weave.local."} <= {e["name"] for e in local}   # restored from disk
    wait_until(lambda: dns.short(1, 1, "extra.weave.local") == ["10.32.3.77"], 30, "extra back on h1")
    wait_until(lambda: dns.short(1, 1, f"{name}.weave.local") == [dns.ip(3, 2)], 30, "h3's container back")
    wait_until(lambda: len(dns.short(3, 2, "svc.weave.local")) == 5, 30, "h3 has the others' names again")
    dns.w(3, "dns-remove", "10.32.3.77", "-h", "extra.weave.local")


def test_a_name_removed_during_a_partition_stays_removed(dns: DnsLab) -> None:
    lab = dns.lab
    ns = lab.add_container(1)
    lab.exec(1, [*W, "attach", "10.32.1.70/12", f"netns:{ns}", "-h", "parted"])
    wait_until(lambda: dns.short(3, 1, "parted.weave.local") == ["10.32.1.70"], 20, "parted on h3")
    lab.cut(1, 3)
    lab.cut(2, 3)
    try:
        # h3 alone: the peers it lost take their names with them
        wait_until(lambda: status(dns.dig(3, 1, "parted.weave.local")) == "NXDOMAIN", 60, "h3 drops h1's names")
        lab.exec(1, [*W, "detach", f"netns:{ns}"])
        wait_until(lambda: status(dns.dig(2, 1, "parted.weave.local")) == "NXDOMAIN", 15, "removed on h2")
    finally:
        lab.restore(1, 3)
        lab.restore(2, 3)
    wait_until(lambda: len(dns.short(3, 1, "svc.weave.local")) == 5, 60, "h3 back in the mesh")
    for i in (1, 2, 3):
        assert status(dns.dig(i, 1, "parted.weave.local")) == "NXDOMAIN", i


FUZZ = r'''
import os, random, socket, struct, sys
from dnslib import DNSRecord
rng = random.Random(int(sys.argv[1]))
dst = ("169.254.53.53", 53)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
good = DNSRecord.question("svc.weave.local").pack()
for k in range(3000):
    kind = k % 3
    if kind == 0:
        data = os.urandom(rng.randrange(0, 600))
    elif kind == 1:
        b = bytearray(good); i = rng.randrange(len(b)); b[i:i + 4] = os.urandom(4); data = bytes(b[:rng.randrange(1, len(b) + 1)])
    else:
        data = good[:2] + bytes([rng.randrange(256), rng.randrange(256)]) + struct.pack("!HHHH", *[rng.randrange(4) for _ in range(4)]) + good[12:]
    u.sendto(data, dst)
for k in range(20):   # TCP: bad lengths, garbage, half messages
    t = socket.create_connection(dst, timeout=3)
    t.sendall(struct.pack("!H", rng.randrange(65536)) + os.urandom(rng.randrange(0, 300)))
    t.close()
print("sent")
'''


def test_garbage_to_port_53_never_stops_the_server(dns: DnsLab) -> None:
    import sys

    for seed in (1, 2):
        out = dns.lab.exec_container(1, 1, [sys.executable, "-c", FUZZ, str(seed)], timeout=120)
        assert "sent" in out.stdout
    wait_until(lambda: len(dns.short(1, 1, "svc.weave.local")) == 5, 20, "answers after the garbage")
    rep = json.loads(dns.w(1, "report").stdout)["dns"]
    assert rep["serving"] and rep["stats"]["formerr"] + rep["stats"]["ignored"] > 100
    assert rep["stats"]["errors"] == 0 and rep["stats"]["udp_threads"] == 1    # the server thread lives
    log = Path(f"/run/weave-fdp/{dns.lab.host_ns(1)}/router.log").read_text()
    assert log.count("DNS: bad query") < 50        # each cause once per interval, not per packet


def test_the_dns_address_taken_off_the_bridge_is_put_back(dns: DnsLab) -> None:
    h1 = dns.lab.host_ns(1)
    run_in_netns(h1, ["ip", "addr", "del", f"{DNS}/32", "dev", "weave"])
    wait_until(lambda: f"{DNS}/32" in run_in_netns(h1, ["ip", "-o", "addr", "show", "dev", "weave"]).stdout,
               30, "the DNS address back on h1's bridge")
    wait_until(lambda: len(dns.short(1, 1, "svc.weave.local")) == 5, 20, "answers on h1 again")


def test_no_dns_and_a_custom_domain(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, topology="full", containers=1)
    lab.exec(1, [*W, "launch", "--nickname", "h1", "--no-fastdp", "--no-dns"])
    lab.exec(2, [*W, "launch", "--nickname", "h2", "--no-fastdp", "--dns-domain", "corp.internal", "--dns-ttl", "7",
                 lab.host_ip(1)])
    for i in (1, 2):
        lab.exec(i, [*W, "attach", lab.container_cidr(i, 1), f"netns:{lab.container_ns(i, 1)}"])
    # --no-dns: nothing listens, no resolver written, no DNS ops
    assert not Path(f"/etc/netns/{lab.container_ns(1, 1)}/resolv.conf").exists()
    out = lab.exec_container(1, 1, ["dig", "+time=1", "+tries=1", f"@{DNS}", "x.weave.local"], check=False)
    assert "timed out" in out.stdout or "no servers" in out.stdout or out.returncode != 0
    res = lab.exec(1, [*W, "status", "dns"], check=False)
    assert res.returncode == 2 and "--no-dns" in res.stderr
    assert lab.exec(1, [*W, "report"], check=False).stdout and \
        json.loads(lab.exec(1, [*W, "report"]).stdout)["dns"] is None
    # the custom domain and TTL
    name = lab.container_ns(2, 1)
    out = lab.exec_container(2, 1, ["dig", "+time=3", "+tries=2", f"{name}.corp.internal"], check=False).stdout
    assert f"{name}.corp.internal. 7\tIN\tA\t{lab.container_ip(2, 1)}" in out, out
    conf = Path(f"/etc/netns/{name}/resolv.conf").read_text()
    assert "search corp.internal" in conf
    assert lab.exec_container(2, 1, ["getent", "hosts", name], check=False).stdout.split()[:1] == \
        [lab.container_ip(2, 1)]
