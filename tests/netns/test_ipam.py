"""IPAM over real routers in namespaces: attach with no address, restarts, rmpeer, expose/hide,
observer and seed modes, bad input. One 3-host lab serves the first tests (in file order).
The observer, seed and cloned-name tests build their own labs: `make test-ipam` runs them
(marker ipam_modes), `make test` the rest."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.netns.conftest import unique_prefix
from weave_fdp.lab.lab import Lab, lab_namespaces, weave_command
from weave_fdp.plumbing.netns import netns_pids

pytestmark = pytest.mark.timeout(240)

RANGE = ipaddress.IPv4Network("10.32.0.0/12")
PER_HOST = 10


def cli(lab: Lab, i: int, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return lab.exec(i, [*weave_command(), *args], check=check, timeout=timeout)


def wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def ipam(lab: Lab, i: int) -> dict:
    return json.loads(cli(lab, i, "report").stdout)["ipam"]


def ethwe_addrs(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "ethwe"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()]


def router_pid(lab: Lab, i: int) -> int:
    for pid in netns_pids(lab.host_ns(i)):
        try:
            if b"weave_fdp.router" in open(f"/proc/{pid}/cmdline", "rb").read():
                return pid
        except OSError:
            continue
    raise AssertionError(f"no router in h{i}")


ATTACH_MANY = """
import json, sys, concurrent.futures as cf
from weave_fdp.router.client import RouterClient
targets = sys.argv[1:]
def one(t):
    return RouterClient(timeout=90).call("attach", target=t, addrs=[], timeout=60)["added"]
with cf.ThreadPoolExecutor(len(targets)) as ex:
    print(json.dumps(dict(zip(targets, ex.map(one, targets)))))
"""


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    lab = Lab(prefix=unique_prefix(), hosts=3, topology="full")
    try:
        lab.up()
        for i in (1, 2, 3):
            for _ in range(PER_HOST):
                lab.add_container(i)
        lab.launch_routers()
        yield lab
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)


def test_thirty_containers_at_once_get_unique_addresses_and_ping(lab3: Lab) -> None:
    lab = lab3
    procs = {i: lab.popen(i, [sys.executable, "-c", ATTACH_MANY,
                              *[f"netns:{lab.container_ns(i, j)}" for j in range(1, PER_HOST + 1)]],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())})
             for i in (1, 2, 3)}
    got: dict[str, str] = {}
    for i, p in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        for t, added in json.loads(out).items():
            assert len(added) == 1
            got[t] = added[0]
    addrs = [ipaddress.IPv4Interface(c) for c in got.values()]
    assert len(got) == 3 * PER_HOST and len({a.ip for a in addrs}) == len(addrs)
    assert all(a.network == RANGE for a in addrs)
    for t, cidr in got.items():                       # what IPAM said is what the container has
        assert ethwe_addrs(t[len("netns:"):]) == [cidr]
    # a sample of 30 pairs: container k pings container k+PER_HOST (always on another host)
    order = [(i, j) for i in (1, 2, 3) for j in range(1, PER_HOST + 1)]
    pings = []
    for k, (i, j) in enumerate(order):
        di, dj = order[(k + PER_HOST) % len(order)]
        dst = got[f"netns:{lab.container_ns(di, dj)}"].split("/")[0]
        pings.append((i, j, dst, lab.popen_container(i, j, ["ping", "-c", "3", "-i", "0.2", "-W", "3", dst],
                                                     stdout=subprocess.PIPE, text=True)))
    failed = [(i, j, dst) for i, j, dst, p in pings if p.wait(timeout=60) != 0]
    assert not failed
    st = ipam(lab, 1)
    assert st["status"] == "ready" and st["allocated"] == PER_HOST
    assert sorted(e["reachable"] for e in st["entries"]) == [True] * 3


def test_net_and_ip_forms_mixed_on_one_container(lab3: Lab) -> None:
    lab = lab3
    ns = lab.container_ns(1, 1)
    before = ethwe_addrs(ns)
    out = cli(lab, 1, "attach", "net:10.32.200.0/24", "ip:10.32.250.5/12", f"netns:{ns}").stdout.split()
    assert len(out) == 2 and ipaddress.IPv4Address(out[0]) in ipaddress.IPv4Network("10.32.200.0/24")
    assert out[1] == "10.32.250.5"
    assert set(ethwe_addrs(ns)) == set(before) | {f"{out[0]}/24", "10.32.250.5/12"}
    # another target may not take a claimed address; a /31 has no host address
    r = cli(lab, 2, "attach", "ip:10.32.250.5/12", f"netns:{lab.container_ns(2, 1)}", check=False)
    assert r.returncode == 4 and "10.32.250.5" in r.stderr
    r = cli(lab, 1, "attach", "net:10.32.9.0/31", f"netns:{ns}", check=False)
    assert r.returncode == 2 and "no address for a host" in r.stderr
    r = cli(lab, 1, "attach", "net:10.99.0.0/24", f"netns:{ns}", check=False)
    assert r.returncode == 2 and "outside the allocation range" in r.stderr
    # detach of one subnet frees that address at once; status shows the DefaultSubnet/Range lines
    assert cli(lab, 1, "detach", "net:10.32.200.0/24", f"netns:{ns}").stdout.split() == [out[0]]
    status = cli(lab, 1, "status").stdout
    assert "DefaultSubnet: 10.32.0.0/12" in status and "Range: 10.32.0.0/12" in status


def test_expose_hide_and_a_dnat_through_the_exposed_host(lab3: Lab) -> None:
    lab = lab3
    local = json.loads(cli(lab, 1, "ps", "--json").stdout)
    c1 = next(p for p in local if p["container"] == f"netns:{lab.container_ns(1, 2)}")
    c1_ip = c1["cidrs"][0].split("/")[0]
    outside = lab.container_ns(1, 3)
    cli(lab, 1, "detach", f"netns:{outside}")
    cli(lab, 1, "attach", "192.168.77.5/24", f"netns:{outside}")
    assert lab.exec(1, ["ping", "-c", "1", "-W", "1", c1_ip], check=False).returncode != 0   # not exposed yet
    addr = cli(lab, 1, "expose", "-h", "h1.weave.local").stdout.split()
    assert len(addr) == 1 and ipaddress.IPv4Address(addr[0]) in RANGE
    table = lab.exec(1, ["nft", "list", "table", "ip", "weave_fdp_expose"]).stdout
    assert cli(lab, 1, "expose").stdout.split() == addr                                      # idempotent
    assert lab.exec(1, ["nft", "list", "table", "ip", "weave_fdp_expose"]).stdout == table
    assert "masquerade" in table and "10.32.0.0/12" in table
    lab.exec(1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", c1_ip])                        # exposed subnet
    assert addr[0] in cli(lab, 1, "dns-lookup", "h1.weave.local").stdout                    # -h FQDN
    assert lab.exec(1, ["ping", "-c", "1", "-W", "1", "192.168.77.5"], check=False).returncode != 0
    # DNAT: h2 reaches a container of h1 through h1's underlay address
    lab.exec(1, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.exec(1, ["nft", "-f", "-"], input="table ip dnat_test {\n chain pre {\n"
                                           "  type nat hook prerouting priority dstnat;\n"
                                           f"  tcp dport 8080 dnat to {c1_ip}:8080\n }}\n}}\n")
    server = lab.popen_container(1, 2, [sys.executable, "-m", "http.server", "8080", "--bind", c1_ip],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fetch = ("import urllib.request,sys;print(urllib.request.urlopen(sys.argv[1],timeout=3).status)")
        wait_for(lambda: lab.exec(2, [sys.executable, "-c", fetch, f"http://{lab.host_ip(1)}:8080/"],
                                  check=False).stdout.strip() == "200", 30, "the DNAT to the container")
    finally:
        server.kill()
        server.wait()
        lab.exec(1, ["nft", "delete", "table", "ip", "dnat_test"], check=False)
    assert cli(lab, 1, "hide").stdout.split() == addr
    assert lab.exec(1, ["nft", "list", "table", "ip", "weave_fdp_expose"], check=False).returncode != 0
    assert addr[0] not in lab.exec(1, ["ip", "-o", "addr", "show", "weave"]).stdout
    assert cli(lab, 1, "hide").stdout.split() == []                                         # idempotent
    assert cli(lab, 1, "dns-lookup", "h1.weave.local", check=False).returncode == 7
    assert addr[0] not in ipam(lab, 1)["allocations"]


def test_restart_every_router_keeps_every_address(lab3: Lab) -> None:
    lab = lab3
    before = {i: {p["container"]: p["cidrs"] for p in json.loads(cli(lab, i, "ps", "--json").stdout)}
              for i in (1, 2, 3)}
    for i in (1, 2, 3):
        os.kill(router_pid(lab, i), signal.SIGKILL)          # a crash, not a clean stop
    launches = [lab.popen(i, [*weave_command(), "launch", "--resume", "--nickname", f"h{i}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2, 3)]
    for p in launches:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for i in (1, 2, 3):
        after = {p["container"]: p["cidrs"] for p in json.loads(cli(lab, i, "ps", "--json").stdout)}
        assert after == before[i]
        managed = {t for t, cs in before[i].items() if any(ipaddress.IPv4Interface(c).ip in RANGE for c in cs)}
        assert set(ipam(lab, i)["allocations"].values()) >= managed
    # re-attaching a target gives its address back; a new allocation is unique
    t = f"netns:{lab.container_ns(2, 4)}"
    assert cli(lab, 2, "attach", t).stdout.split() == [before[2][t][0].split("/")[0]]
    cli(lab, 2, "detach", t)
    fresh = cli(lab, 2, "attach", f"netns:{lab.container_ns(2, 4)}").stdout.split()[0]
    held = {c.split("/")[0] for i in (1, 2, 3) for cs in before[i].values() for c in cs}
    assert fresh == before[2][t][0].split("/")[0] or fresh not in held


def test_rmpeer_of_a_killed_router_reclaims_its_space(lab3: Lab) -> None:
    lab = lab3
    st = ipam(lab, 1)
    h3 = next(e for e in st["entries"] if e["nickname"] == "h3")
    r = cli(lab, 1, "rmpeer", "h3", check=False)
    assert r.returncode == 2 and "reachable" in r.stderr                  # refused while alive
    os.kill(router_pid(lab, 3), signal.SIGKILL)
    wait_for(lambda: not next(e for e in ipam(lab, 1)["entries"] if e["name"] == h3["name"])["reachable"],
             30, "h3 unreachable")
    assert "unreachable!" in cli(lab, 1, "status", "ipam").stdout
    out = cli(lab, 1, "rmpeer", "h3").stdout.strip()
    assert out == f"{h3['size']} IPs taken over from {h3['name']}(h3)"
    # a subnet that lay in h3's space is allocated from again, on h1
    lo = ipaddress.IPv4Address(h3["ranges"][0].split("-")[0])
    sub = ipaddress.IPv4Network(((int(lo) + 256) & ~255, 24))
    got = cli(lab, 1, "attach", f"net:{sub}", f"netns:{lab.container_ns(1, 5)}").stdout.split()
    assert ipaddress.IPv4Address(got[0]) in sub
    wait_for(lambda: h3["name"] not in {e["name"] for e in ipam(lab, 2)["entries"]}, 30, "h2 to learn of rmpeer")


@pytest.mark.ipam_modes
def test_observer_alone_cannot_allocate_until_a_voter_joins(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    lab.add_container(1)
    lab.routers = lab.state.routers = True
    lab._save()
    cli(lab, 1, "launch", "--nickname", "h1", "--ipalloc-init", "observer")
    r = cli(lab, 1, "attach", "--timeout", "2", f"netns:{lab.container_ns(1, 1)}", check=False)
    assert r.returncode == 1 and "observer" in r.stderr and "gave up after 2 s" in r.stderr
    assert "ethwe" not in subprocess.run(["ip", "-n", lab.container_ns(1, 1), "link"], capture_output=True,
                                         text=True).stdout                      # nothing half-attached
    assert ipam(lab, 1)["status"] == "priming"
    cli(lab, 2, "launch", "--nickname", "h2", "--ipalloc-init", "consensus=1", lab.host_ip(1))
    got = cli(lab, 1, "attach", f"netns:{lab.container_ns(1, 1)}").stdout.split()
    assert ipaddress.IPv4Address(got[0]) in RANGE
    assert cli(lab, 1, "prime", "--timeout", "5").stdout.strip() == "ready"


@pytest.mark.ipam_modes
def test_seed_peers_allocate_apart_then_connect_without_clash(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    names = ["7e:00:00:00:00:01", "7e:00:00:00:00:02"]
    for i in (1, 2):
        for _ in range(3):
            lab.add_container(i)
    lab.routers = lab.state.routers = True
    lab._save()
    seed = "seed=" + ",".join(names)
    launches = [lab.popen(i, [*weave_command(), "launch", "--name", names[i - 1], "--nickname", f"h{i}",
                              "--ipalloc-init", seed], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in (1, 2)]
    for p in launches:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    attaches = {(i, j): lab.popen(i, [*weave_command(), "attach", f"netns:{lab.container_ns(i, j)}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in (1, 2) for j in (1, 2, 3)}
    got = {}
    for k, p in attaches.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got[k] = out.strip()
    assert len(set(got.values())) == 6
    cli(lab, 1, "connect", lab.host_ip(2))
    wait_for(lambda: all(e["reachable"] for e in ipam(lab, 1)["entries"]) and len(ipam(lab, 1)["entries"]) == 2,
             30, "the seeds to see each other")
    assert not ipam(lab, 1)["conflicts"] and not ipam(lab, 2)["conflicts"]
    wait_for(lambda: lab.exec_container(1, 1, ["ping", "-c", "1", "-W", "1", got[(2, 1)]], check=False).returncode == 0,
             30, "a ping between seeds")
    # reset hands h2's space to h1 before it leaves: h1 owns the whole range, allocation goes on
    out = cli(lab, 2, "reset").stdout
    assert f"IP space handed to {names[0]}(h1)" in out
    wait_for(lambda: [(e["name"], e["share"]) for e in ipam(lab, 1)["entries"]] == [(names[0], 100.0)], 30,
             "h1 to own the range")
    assert cli(lab, 1, "attach", f"netns:{lab.container_ns(1, 3)}").stdout.strip() == got[(1, 3)]


def test_bad_input_one_line_and_exit_code(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    lab.add_container(1)
    lab.routers = lab.state.routers = True
    lab._save()
    launch = [*weave_command(), "launch", "--nickname", "h1"]
    for args, code, text in [(["--ipalloc-range", "10.32.0.0/33"], 2, "is not an IPv4 CIDR"),
                             (["--ipalloc-range", "10.32.0.1/32"], 2, "no address for a host"),
                             (["--ipalloc-range", "192.0.2.0/25"], 2, "overlaps the host route 192.0.2.0/24"),
                             (["--ipalloc-init", "seed=bogus"], 2, "seeds must be peer names")]:
        r = lab.exec(1, [*launch, *args], check=False)
        assert r.returncode == code and text in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    # a full range: a /30 holds two addresses
    cli(lab, 1, "launch", "--nickname", "h1", "--ipalloc-range", "10.99.0.0/30")
    for j in (2, 3):
        lab.add_container(1)
    assert cli(lab, 1, "attach", f"netns:{lab.container_ns(1, 1)}").stdout.strip() == "10.99.0.1"
    assert cli(lab, 1, "attach", f"netns:{lab.container_ns(1, 2)}").stdout.strip() == "10.99.0.2"
    r = cli(lab, 1, "attach", f"netns:{lab.container_ns(1, 3)}", check=False)
    assert r.returncode == 1 and "is full" in r.stderr
    # a peer with another range: refused on both sides, each saying so
    cli(lab, 2, "launch", "--nickname", "h2", "--ipalloc-range", "10.98.0.0/30", "--ipalloc-init", "consensus=1",
        lab.host_ip(1))
    cli(lab, 2, "prime", "--timeout", "10")
    for i in (1, 2):
        wait_for(lambda i=i: ipam(lab, i)["conflicts"], 30, f"h{i} to report the range conflict")
        assert "same --ipalloc-range" in cli(lab, i, "status", "ipam").stdout
    # a corrupt state file: the launch refuses, naming the file and the fix
    state_dir = json.loads(cli(lab, 1, "report").stdout)["router"]["state_dir"]
    cli(lab, 1, "stop")
    path = f"{state_dir}/ipam.bin"
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-4])
    r = lab.exec(1, [*launch, "--ipalloc-range", "10.99.0.0/30"], check=False)
    assert r.returncode == 1 and path in r.stderr and "rm " in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.ipam_modes
def test_cloned_identity_is_refused_on_both_sides(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    lab.routers = lab.state.routers = True
    lab._save()
    name = "7e:00:00:00:00:09"
    cli(lab, 1, "launch", "--name", name, "--nickname", "h1")
    cli(lab, 2, "launch", "--name", name, "--nickname", "h2", lab.host_ip(1))

    def says(i: int) -> bool:
        conns = json.loads(cli(lab, i, "status", "connections", "--json").stdout)
        return any("runs under this router's name" in (c.get("info") or "") for c in conns)

    for i in (1, 2):
        wait_for(lambda i=i: says(i), 30, f"h{i} to report the clone")
