"""An exposed host on the weave network, through real routers: its own containers and the
remote ones, over fastdp (the host's side of the bridge is a fastdp port), over the sleeve
when fastdp is blocked, and with ``--no-fastdp``; ``hide`` takes the reach away.

- h1 ``expose``: ping and a TCP exchange from h1's host namespace to a container on h2
  and one on h3; the connections stay in fastdp mode and tshark on h1's underlay sees the
  frames inside VXLAN on UDP 6784 (inner source the exposed address); a remote container
  reaches the exposed host too (its ARP is flooded up the host's stack).
- weaveDNS queries from a container go to the bridge and nowhere else: no VXLAN frame
  carries one (a query to a remote address, captured in the same window, proves the
  capture sees queries).
- UDP 6784 blocked between h1 and h2: the connection falls back to the sleeve and the
  exposed host still reaches h2's container.
- ``hide``: the host reaches no container any more; ``stop`` detaches the bridge's program.
- every exposed address may send (the port's guard follows expose); a ninth IPv4 address
  on the bridge is refused (a port holds 8) and nothing is added.
- all of it again with every router ``--no-fastdp`` (the bridge and the sleeve alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns.conftest import unique_prefix
from tests.netns.fastdp_helpers import vxlan_fields
from tests.netns.test_overlay_switch import mode, wait_mode
from weave_fdp.datapath import hooks
from weave_fdp.datapath.fastdp.loader import PROG_FROM_CONTAINER
from weave_fdp.lab.lab import Lab, lab_namespaces, weave_command

pytestmark = pytest.mark.timeout(300)

DNS = "169.254.53.53"
PORT = 7777
# a one-connection echo server: what it reads it sends back, then it exits
ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.settimeout(30)
data = b""
while not data.endswith(b"\\n"):
    got = c.recv(65536)
    if not got:
        break
    data += got
c.sendall(data); c.close()
"""
ECHO_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
msg = b"x" * 20000 + b"\\n"   # more than one segment each way
s.sendall(msg)
got = b""
while len(got) < len(msg):
    part = s.recv(65536)
    if not part:
        break
    got += part
print("echoed" if got == msg else f"short echo: {len(got)} of {len(msg)}")
"""


def cli(lab: Lab, i: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab.exec(i, [*weave_command(), *args], check=check, timeout=60)


def host_ping(lab: Lab, i: int, ip: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return lab.exec(i, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", ip], check=False, timeout=30)


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def tcp_exchange(lab: Lab, i: int, dst: tuple[int, int]) -> str:
    """A TCP connection from host i's namespace to container ``dst`` (echo of 20 kB)."""
    ip = lab.container_ip(*dst)
    srv = lab.popen_container(*dst, [sys.executable, "-c", ECHO_SERVER, ip, str(PORT)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = lab.exec(i, [sys.executable, "-c", ECHO_CLIENT, ip, str(PORT)], check=False, timeout=60)
        return out.stdout.strip() or out.stderr.strip()[-300:]
    finally:
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def inner(field: str) -> str:
    """The inner value of a tshark field that the outer headers also have ("outer,inner")."""
    return field.split(",")[-1]


def make(no_fastdp: bool) -> Lab:
    lab = Lab(prefix=unique_prefix(), hosts=3, topology="full")
    lab.up()
    for i in (1, 2, 3):
        lab.add_container(i)
    lab.launch_routers(["--no-fastdp"] if no_fastdp else [])
    lab.attach_containers(timeout=60)
    return lab


@pytest.fixture(scope="module")
def fastdp_lab() -> Iterator[Lab]:
    lab = make(no_fastdp=False)
    try:
        for j in (2, 3):
            wait_mode(lab, 1, j, "fastdp", 60)
            wait_mode(lab, j, 1, "fastdp", 60)
        yield lab
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)


def test_exposed_host_reaches_remote_containers_over_fastdp(fastdp_lab: Lab) -> None:
    lab = fastdp_lab
    c2, c3 = lab.container_ip(2, 1), lab.container_ip(3, 1)
    assert PROG_FROM_CONTAINER in hooks.programs("weave", direction="egress", netns=lab.host_ns(1))
    assert host_ping(lab, 1, c2, count=1).returncode != 0          # not exposed yet
    addr = cli(lab, 1, "expose").stdout.split()
    assert len(addr) == 1
    exposed = addr[0]

    def pings() -> None:
        for ip in (c2, c3):
            r = host_ping(lab, 1, ip)
            assert r.returncode == 0, r.stdout + r.stderr

    rows = vxlan_fields(lab, 1, ["udp.dstport", "ip.src", "ip.dst", "icmp.type"], pings)
    for ip in (c2, c3):
        req = [r for r in rows if r[3] == "8" and inner(r[1]) == exposed and inner(r[2]) == ip]
        rep = [r for r in rows if r[3] == "0" and inner(r[1]) == ip and inner(r[2]) == exposed]
        assert req and rep, f"no ICMP between {exposed} and {ip} inside VXLAN: {rows}"
        assert all(r[0] == "6784" for r in req + rep)

    def exchanges() -> None:
        for c in ((2, 1), (3, 1)):
            got = tcp_exchange(lab, 1, c)
            assert got == "echoed", f"h1 -> container {c}: {got}"

    rows = vxlan_fields(lab, 1, ["ip.src", "ip.dst", "tcp.len"], exchanges, display=f"tcp.port == {PORT}")
    for ip in (c2, c3):
        assert [r for r in rows if inner(r[0]) == exposed and inner(r[1]) == ip and int(r[2] or 0) > 0], rows
        assert [r for r in rows if inner(r[0]) == ip and inner(r[1]) == exposed and int(r[2] or 0) > 0], rows
    for j in (2, 3):
        assert mode(lab, 1, j)[0] == "fastdp"
    flows = json.loads(cli(lab, 1, "report").stdout)["datapath"]["flows"]
    assert [f for f in flows if f["src_ip"] == exposed and f["dst_ip"] == c2 and f["path"] == "fastdp"], flows
    # h2 learned the bridge's MAC behind h1: its container's replies go unicast, not flooded
    flows = json.loads(cli(lab, 2, "report").stdout)["datapath"]["flows"]
    back = [f for f in flows if f["src_ip"] == c2 and f["dst_ip"] == exposed]
    assert back and all(f["dir"] == "tx" for f in back), back

    # the other way: a remote container reaches the exposed host (its ARP comes up the host's stack)
    r = lab.exec_container(3, 1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", exposed], check=False)
    assert r.returncode == 0, r.stdout

    assert cli(lab, 1, "hide").stdout.split() == addr
    assert host_ping(lab, 1, c2, count=1).returncode != 0
    assert host_ping(lab, 1, c3, count=1).returncode != 0


def test_dns_queries_from_containers_stay_on_the_host(fastdp_lab: Lab) -> None:
    lab = fastdp_lab
    name = f"{lab.container_ns(2, 1)}.weave.local"
    wait_for(lambda: lab.container_ip(2, 1) in lab.exec_container(
        1, 1, ["dig", "+short", "+time=2", "+tries=1", f"@{DNS}", name], check=False).stdout, 30,
        "weaveDNS to answer the container")
    answers: list[str] = []

    def queries() -> None:
        for _ in range(3):
            answers.append(lab.exec_container(1, 1, ["dig", "+short", "+time=2", "+tries=1", f"@{DNS}", name],
                                              check=False).stdout)
        # the control: a query to a remote container (nothing answers there) does cross
        lab.exec_container(1, 1, ["dig", "+time=1", "+tries=1", f"@{lab.container_ip(2, 1)}", name], check=False)

    rows = vxlan_fields(lab, 1, ["ip.src", "ip.dst", "udp.dstport"], queries, display="dns")
    assert all(lab.container_ip(2, 1) in a for a in answers), answers
    assert [r for r in rows if inner(r[1]) == lab.container_ip(2, 1)], f"the control query was not seen: {rows}"
    assert not [r for r in rows if inner(r[1]) == DNS], f"weaveDNS queries left the host: {rows}"


def test_every_exposed_address_may_send_and_no_more_than_a_port_holds(fastdp_lab: Lab) -> None:
    lab = fastdp_lab
    # weaveDNS's 169.254.53.53 is one of the bridge's addresses: 7 more make the port's 8
    mine = [f"10.32.200.{k}/12" for k in range(1, 8)]
    assert cli(lab, 1, "expose", *mine).stdout.split() == [c.split("/")[0] for c in mine]
    try:
        for cidr in (mine[0], mine[-1]):   # the guard took each of them
            r = lab.exec(1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", cidr.split("/")[0],
                             lab.container_ip(2, 1)], check=False)
            assert r.returncode == 0, r.stdout
        r = cli(lab, 1, "expose", "10.32.200.8/12", check=False)
        assert r.returncode == 1 and "at most 8" in r.stderr, r.stderr
        assert "10.32.200.8" not in lab.exec(1, ["ip", "-o", "addr", "show", "weave"]).stdout
    finally:
        assert sorted(cli(lab, 1, "hide").stdout.split()) == sorted(c.split("/")[0] for c in mine)


def test_sleeve_fallback_keeps_the_exposed_host_reaching(fastdp_lab: Lab) -> None:
    lab = fastdp_lab
    cli(lab, 1, "expose")
    try:
        lab.block_udp_port(1, 2, 6784)
        try:
            wait_mode(lab, 1, 2, "sleeve", 30)
            r = host_ping(lab, 1, lab.container_ip(2, 1))
            assert r.returncode == 0, r.stdout
            assert tcp_exchange(lab, 1, (2, 1)) == "echoed"
        finally:
            lab.unblock_udp_port(1, 2, 6784)
        wait_mode(lab, 1, 2, "fastdp", 60)
        assert host_ping(lab, 1, lab.container_ip(2, 1)).returncode == 0
    finally:
        cli(lab, 1, "hide")


def test_stop_detaches_the_hosts_port(fastdp_lab: Lab) -> None:
    lab = fastdp_lab
    ns = lab.host_ns(1)
    assert PROG_FROM_CONTAINER in hooks.programs("weave", direction="egress", netns=ns)
    cli(lab, 1, "stop")
    assert PROG_FROM_CONTAINER not in hooks.programs("weave", direction="egress", netns=ns)
    # the containers' ports stay (the pinned datapath keeps forwarding for them)
    links = lab.exec(1, ["ip", "-o", "link", "show", "master", "weave"]).stdout
    veth = next(ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines() if "vethwepl" in ln)
    assert PROG_FROM_CONTAINER in hooks.programs(veth, netns=ns)
    cli(lab, 1, "reset")
    assert lab.exec(1, ["ip", "link", "show", "weave"], check=False).returncode != 0


def test_no_fastdp_exposed_host_reaches_remote_containers_by_sleeve() -> None:
    lab = make(no_fastdp=True)
    try:
        for j in (2, 3):
            wait_mode(lab, 1, j, "sleeve", 60)
        assert hooks.programs("weave", direction="egress", netns=lab.host_ns(1)) == []
        c2, c3 = lab.container_ip(2, 1), lab.container_ip(3, 1)
        addr = cli(lab, 1, "expose").stdout.split()
        for ip in (c2, c3):
            r = host_ping(lab, 1, ip)
            assert r.returncode == 0, r.stdout
        for c in ((2, 1), (3, 1)):
            assert tcp_exchange(lab, 1, c) == "echoed"
        assert cli(lab, 1, "hide").stdout.split() == addr
        assert host_ping(lab, 1, c2, count=1).returncode != 0
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)
