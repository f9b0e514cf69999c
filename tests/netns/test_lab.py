"""The lab over real namespaces: layout, topology enforcement, faults, CLI, clean-up."""

from __future__ import annotations

import json
import re
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from weave_fdp import paths
from weave_fdp.errors import AlreadyExists, ExitCode
from weave_fdp.lab import state as lab_state
from weave_fdp.lab.lab import Lab, lab_namespaces, teardown
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import NETNS_DIR, NetnsCommandFailed, create_netns, delete_netns, netns_pids


MakeLab = Callable[..., Lab]
CLI = [sys.executable, "-m", "weave_fdp.cli.main"]


def unique_prefix() -> str:
    return "t" + secrets.token_hex(3)[:5]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def ns_inodes(names: list[str]) -> set[tuple[int, int]]:
    out = set()
    for n in names:
        st = os.stat(NETNS_DIR / n)
        out.add((st.st_dev, st.st_ino))
    return out


def procs_in(inodes: set[tuple[int, int]]) -> list[int]:
    """PIDs whose network namespace is one of ``inodes`` (works after the names are gone)."""
    pids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                st = os.stat(f"/proc/{e}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in inodes:
                pids.append(int(e))
    return pids


def init_ns_link_names() -> set[str]:
    return {li.name for li in links.list_links(None)}


@pytest.mark.parametrize("topology", ["full", "line", "ring", "star"])
def test_up_down_per_topology(make_lab: MakeLab, topology: str) -> None:
    before = init_ns_link_names()
    lab = make_lab(hosts=4, topology=topology, containers=1)
    names = lab_namespaces(lab.prefix)
    assert sorted(names) == sorted(lab.namespaces())
    eth0 = links.get_link("eth0", lab.host_ns(2))
    assert eth0.addresses == ("192.0.2.2/24",) and eth0.mtu == 1500 and eth0.up
    assert links.get_link("lo", lab.host_ns(2)).up and links.get_link("lo", lab.container_ns(2, 1)).up
    assert [li.name for li in links.list_links(lab.container_ns(1, 1))] == ["lo"]
    ports = {li.name for li in links.list_links(lab.ul_ns)}
    assert ports == {"lo", "ul0", "h1", "h2", "h3", "h4"}
    # the underlay matrix is exactly the topology's adjacency
    assert lab.reachability() == lab.expected_reachability()
    # processes started in the lab are stopped by down
    sleeper = lab.popen(1, ["sleep", "60"])
    lab.popen_container(2, 1, ["sleep", "60"])
    inodes = ns_inodes(names)
    deadline = time.monotonic() + 5  # `ip netns exec` needs a moment to enter the namespace
    while len(procs_in(inodes)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(procs_in(inodes)) == 2
    lab.down()
    assert sleeper.poll() is not None
    assert lab_namespaces(lab.prefix) == []
    assert procs_in(inodes) == []
    assert lab_state.load(lab.prefix) is None
    new_links = init_ns_link_names() - before
    assert not new_links & {"ul0", "eth0", "h1", "h2", "h3", "h4"}
    lab.down()  # idempotent


def test_three_hosts_build_fast(make_lab: MakeLab) -> None:
    lab = make_lab(up=False)
    t0 = time.monotonic()
    lab.up()
    took = time.monotonic() - t0
    print(f"3-host lab up in {took:.3f} s")
    assert took < 2.0
    t0 = time.monotonic()
    lab.down()
    print(f"3-host lab down in {time.monotonic() - t0:.3f} s")


def test_line_really_relays_only_through_neighbours(make_lab: MakeLab) -> None:
    lab = make_lab(hosts=3, topology="line")
    assert lab.neighbours(1) == [2] and lab.neighbours(2) == [1, 3]
    assert lab.exec(1, ["ping", "-c1", "-W1", lab.host_ip(2)]).returncode == 0
    cp = lab.exec(1, ["ping", "-c1", "-W1", lab.host_ip(3)], check=False)
    assert cp.returncode != 0


def test_cut_and_restore(make_lab: MakeLab) -> None:
    lab = make_lab(hosts=3, topology="full")
    lab.cut(1, 2)
    reach = lab.reachability()
    assert reach[(1, 2)] is False and reach[(2, 1)] is False
    assert reach[(1, 3)] and reach[(2, 3)] and reach[(3, 1)]
    assert reach == lab.expected_reachability()
    assert Lab.load(lab.prefix).state.cuts == [(1, 2)]  # another process sees the cut
    lab.cut(2, 1)  # idempotent
    lab.restore(2, 1)
    assert all(lab.wait_reachability().values())
    lab.restore(1, 2)  # no-op


ECHO_SERVER = """
import select, socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port)); socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, addr = s.recvfrom(2048); s.sendto(data, addr)
"""

ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.4)
for attempt in range(2):
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(2048)[0].decode()); break
    except socket.timeout:
        pass
else:
    print("timeout")
"""


def test_block_udp_port(make_lab: MakeLab) -> None:
    lab = make_lab(hosts=2, topology="line")
    server = lab.popen(2, [sys.executable, "-c", ECHO_SERVER, "6784", "6783"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    def echo(port: int) -> str:
        return lab.exec(1, [sys.executable, "-c", ECHO_CLIENT, lab.host_ip(2), str(port)]).stdout.strip()

    assert echo(6784) == "hi" and echo(6783) == "hi"
    lab.block_udp_port(1, 2, 6784)
    assert echo(6784) == "timeout"
    assert echo(6783) == "hi"  # other ports and ICMP still pass
    assert lab.reachability()[(1, 2)]
    lab.unblock_udp_port(2, 1, 6784)
    assert echo(6784) == "hi"


def test_containers_and_exec(make_lab: MakeLab) -> None:
    lab = make_lab(hosts=2, containers=1)
    ns = lab.add_container(2)
    assert ns == lab.container_ns(2, 2) == f"{lab.prefix}-h2-c2"
    assert Lab.load(lab.prefix).containers(2) == 2
    out = lab.exec_container(2, 2, ["ip", "-o", "link"]).stdout
    assert "lo:" in out and "eth0" not in out
    assert "192.0.2.1/24" in lab.exec(1, ["ip", "-o", "addr", "show", "eth0"]).stdout
    with pytest.raises(NetnsCommandFailed) as ei:
        lab.exec(1, ["sh", "-c", "echo oops >&2; exit 3"])
    assert isinstance(ei.value, subprocess.CalledProcessError) and ei.value.returncode == 3
    assert "oops" in str(ei.value)
    assert lab.exec(1, ["sh", "-c", "exit 4"], check=False).returncode == 4


def test_failure_half_way_rolls_back(make_lab: MakeLab) -> None:
    lab = make_lab(hosts=3, containers=1, up=False)

    def boom(what: str, done: int, total: int) -> None:
        if what == "host h3":
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        lab.up(progress=boom)
    assert lab_namespaces(lab.prefix) == []
    assert lab_state.load(lab.prefix) is None


def test_name_clash_builds_nothing_and_keeps_the_other(lab_prefix: str) -> None:
    other = create_netns(f"{lab_prefix}-h2")
    try:
        with pytest.raises(AlreadyExists) as ei:
            Lab(prefix=lab_prefix, hosts=3).up()
        assert ei.value.exit_code == ExitCode.ALREADY_EXISTS
        assert lab_namespaces(lab_prefix) == [other]  # ours untouched, nothing else built
        cp = cli("lab", "up", "--prefix", lab_prefix)
        assert cp.returncode == ExitCode.ALREADY_EXISTS
        assert cp.stderr.count("\n") == 1 and f"{lab_prefix}-h2 already exists" in cp.stderr
        assert f"lab down --prefix {lab_prefix}" in cp.stderr
    finally:
        delete_netns(other)


def test_teardown_survives_missing_reset(make_lab: MakeLab) -> None:
    # routers=True makes down run `weave-fdp reset` first; its failure must not stop the tear-down
    lab = make_lab(hosts=2)
    # the routers' per-host dirs go too (keyed by namespace name); another lab's stay
    mine = [paths.STATE_ROOT / lab.host_ns(1), paths.RUNTIME_ROOT / lab.host_ns(2)]
    other = paths.STATE_ROOT / f"{lab.prefix}x-h1"
    for d in [*mine, other]:
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f").write_text("x")
    try:
        assert len(teardown(lab.prefix, routers=True, reset_timeout=10)) == 3
        assert lab_namespaces(lab.prefix) == []
        assert not any(d.exists() for d in mine) and other.exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_cli_up_status_exec_down(lab_prefix: str) -> None:
    cp = cli("lab", "up", "--prefix", lab_prefix, "--hosts", "3", "--topology", "line", "--containers", "1", "--json")
    assert cp.returncode == 0, cp.stderr
    up = json.loads(cp.stdout)
    assert [h["ip"] for h in up["hosts"]] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]

    cp = cli("lab", "status", "--prefix", lab_prefix, "--json")
    assert cp.returncode == 0, cp.stderr
    status = json.loads(cp.stdout)
    assert status["up"] and status["reachability_ok"]
    assert status["reachability"]["h1"] == {"h2": True, "h3": False}
    assert status["hosts"][1]["neighbours"] == ["h1", "h3"]

    cp = cli("lab", "status", "--prefix", lab_prefix)
    assert cp.returncode == 0 and "blocked" in cp.stdout and "h3" in cp.stdout

    cp = cli("lab", "exec", "--prefix", lab_prefix, "h1", "--", "ip", "-o", "addr", "show", "eth0")
    assert cp.returncode == 0 and "192.0.2.1/24" in cp.stdout
    cp = cli("lab", "exec", "--prefix", lab_prefix, "2", "--", "ping", "-c1", "-W1", "192.0.2.3")
    assert cp.returncode == 0
    assert cli("lab", "exec", "--prefix", lab_prefix, "h3-c1", "--", "sh", "-c", "exit 5").returncode == 5
    cp = cli("lab", "exec", "--prefix", lab_prefix, "h7", "--", "true")
    assert cp.returncode == ExitCode.NOT_FOUND and "no host 7" in cp.stderr

    cp = cli("lab", "down", "--prefix", lab_prefix)
    assert cp.returncode == 0 and "removed 7 namespaces" in cp.stdout
    assert lab_namespaces(lab_prefix) == []
    cp = cli("lab", "down", "--prefix", lab_prefix)
    assert cp.returncode == 0 and "nothing to remove" in cp.stdout
    cp = cli("lab", "status", "--prefix", lab_prefix)
    assert cp.returncode == ExitCode.NOT_FOUND


@pytest.mark.parametrize(("args", "code"), [
    (["--topology", "mesh"], ExitCode.USAGE),
    (["--hosts", "0"], ExitCode.USAGE),
    (["--hosts", "251"], ExitCode.USAGE),
])
def test_cli_bad_input_builds_nothing(lab_prefix: str, args: list[str], code: int) -> None:
    cp = cli("lab", "up", "--prefix", lab_prefix, *args)
    assert cp.returncode == code
    assert cp.stderr.startswith("error: ") and cp.stderr.count("\n") == 1
    assert lab_namespaces(lab_prefix) == []


def test_cli_non_root_refused(lab_prefix: str) -> None:
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CLI, "lab", "up", "--prefix", lab_prefix]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert cp.returncode == ExitCode.PERMISSION, cp.stderr
    assert "root" in cp.stderr and cp.stderr.count("\n") == 1
    assert lab_namespaces(lab_prefix) == []


def test_cli_missing_tool(lab_prefix: str, tmp_path: Path) -> None:
    # a PATH with ip and ping but no nft
    for tool in ("ip", "ping"):
        os.symlink(subprocess.check_output(["which", tool], text=True).strip(), tmp_path / tool)
    env = {**os.environ, "PATH": str(tmp_path)}
    cp = cli("lab", "up", "--prefix", lab_prefix, env=env)
    assert cp.returncode == ExitCode.DEPENDENCY
    assert "nft not found" in cp.stderr and "nftables" in cp.stderr
    assert lab_namespaces(lab_prefix) == []


def test_down_removes_leftovers_of_a_crashed_run(lab_prefix: str) -> None:
    mine = [f"{lab_prefix}-ul", f"{lab_prefix}-h1", f"{lab_prefix}-h2-c1"]
    bystander = f"{lab_prefix}x-h1"  # another lab's prefix that merely starts with ours
    for n in [*mine, bystander]:
        create_netns(n)
    try:
        links.create_veth("eth0", "h1", netns=mine[1], peer_netns=mine[0])
        sleeper = subprocess.Popen(["ip", "netns", "exec", mine[1], "sleep", "60"])
        deadline = time.monotonic() + 5
        while not netns_pids(mine[1]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert netns_pids(mine[1]) == [sleeper.pid]
        inodes = ns_inodes(mine)
        cp = cli("lab", "down", "--prefix", lab_prefix)
        assert cp.returncode == 0 and "removed 3 namespaces" in cp.stdout, cp.stderr
        assert sleeper.wait(timeout=5) != 0
        assert lab_namespaces(lab_prefix) == [] and procs_in(inodes) == []
        assert (NETNS_DIR / bystander).exists()
    finally:
        delete_netns(bystander)


def test_cli_down_all(tmp_path: Path) -> None:
    env = {**os.environ, "WEAVE_FDP_RUNTIME_ROOT": str(tmp_path)}  # only these labs are "all"
    prefixes = [unique_prefix(), unique_prefix()]
    try:
        for p in prefixes:
            assert cli("lab", "up", "--prefix", p, "--hosts", "2", env=env).returncode == 0
        assert sorted(f.stem for f in (tmp_path / "lab").glob("*.json")) == sorted(prefixes)
        cp = cli("lab", "down", "--all", "--json", env=env)
        assert cp.returncode == 0
        assert {p: len(v) for p, v in json.loads(cp.stdout)["removed"].items()} == {p: 3 for p in prefixes}
        assert all(lab_namespaces(p) == [] for p in prefixes)
    finally:
        for p in prefixes:
            Lab.down_prefix(p)


def test_cli_demo(lab_prefix: str) -> None:
    cp = cli("lab", "demo", "--prefix", lab_prefix, "--topology", "line")
    assert cp.returncode == 0, cp.stderr
    assert ("fastdp:" in cp.stdout or "probe:" in cp.stdout) and "matches the topology" in cp.stdout and f"lab {lab_prefix} removed" in cp.stdout
    # the overlay part: routers converge, containers on every host ping each other (h1 <-> h3 relayed by h2)
    assert "every router saw the whole mesh" in cp.stdout
    assert "established fastdp" in cp.stdout
    assert "container ping" in cp.stdout and "lost" not in cp.stdout
    assert re.search(r"iperf3 h1-c1 -> h3-c1, 1 TCP stream, \d+ s: [\d.]+ Gbit/s", cp.stdout)
    assert lab_namespaces(lab_prefix) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_leaves_nothing(lab_prefix: str, sig: int) -> None:
    # a line makes the reachability step take ~1 s (h1 -> h3 times out): interrupt it there
    p = subprocess.Popen([*CLI, "lab", "demo", "--prefix", lab_prefix, "--topology", "line"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (NETNS_DIR / f"{lab_prefix}-h3").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert f"lab {lab_prefix} removed" in out, (out, err)
    assert lab_namespaces(lab_prefix) == []
