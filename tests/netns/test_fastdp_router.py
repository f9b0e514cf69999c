"""fastdp through the router and the CLI: attach/detach/ps, restart survival, reset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from weave_fdp.lab.lab import weave_command
from weave_fdp.plumbing.netns import netns_pids

pytestmark = pytest.mark.timeout(150)


def cli(lab, i, *args, check=True):
    return lab.exec(i, [*weave_command(), *args], check=check)


def wait_fastdp(lab, i, n=1, timeout=20.0):
    deadline = time.monotonic() + timeout
    conns = []
    while time.monotonic() < deadline:
        try:
            conns = json.loads(cli(lab, i, "status", "connections", "--json", check=False).stdout)
        except ValueError:
            conns = []
        if len(conns) >= n and all(c.get("mode") == "fastdp" for c in conns):
            return conns
        time.sleep(0.25)
    r = cli(lab, i, "status", "connections", "--json", check=False)
    logs = subprocess.run(f"tail -n 15 /run/weave-fdp/{lab.prefix}-h*/*.log", shell=True, capture_output=True, text=True).stdout
    pytest.fail(f"h{i} connections not in fastdp: {conns} {r.stderr[-300:]}\n{logs}")


def router_pid(lab, i) -> int:
    for pid in netns_pids(lab.host_ns(i)):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"weave_fdp.router" in cmd:
            return pid
    raise AssertionError(f"no router process in h{i}")


def attached_pair(make_lab):
    """Two hosts with routers, container 1 of each attached (attach prints its address), on fastdp."""
    lab = make_lab(hosts=2, topology="full")
    for i in (1, 2):
        lab.add_container(i)
    lab.launch_routers()
    for i in (1, 2):
        out = cli(lab, i, "attach", lab.container_cidr(i, 1), f"netns:{lab.container_ns(i, 1)}").stdout
        assert out.strip() == lab.container_ip(i, 1)
    wait_fastdp(lab, 1)
    return lab


def test_attach_ping_ps_errors_restart_detach(make_lab) -> None:
    lab = attached_pair(make_lab)
    # attaching twice is harmless
    assert cli(lab, 1, "attach", lab.container_cidr(1, 1), f"netns:{lab.container_ns(1, 1)}").returncode == 0
    ps = json.loads(cli(lab, 1, "ps", "--json").stdout)
    assert [(p["container"], p["cidrs"]) for p in ps] == [(f"netns:{lab.container_ns(1, 1)}", [lab.container_cidr(1, 1)])]
    assert re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", ps[0]["mac"])
    # bad input: typed errors, nothing half-attached
    r = cli(lab, 1, "attach", "10.32.9.9/12", "netns:nope-nothere", check=False)
    assert r.returncode == 7 and "does not exist" in r.stderr
    r = cli(lab, 1, "attach", "10.32.9.300/12", f"netns:{lab.container_ns(1, 1)}", check=False)
    assert r.returncode == 2 and "bad address" in r.stderr
    r = cli(lab, 1, "attach", "net:10.32.0.0/31", f"netns:{lab.container_ns(1, 1)}", check=False)
    assert r.returncode == 2 and "no address for a host" in r.stderr
    r = cli(lab, 1, "detach", "pid:999999999", check=False)
    assert r.returncode == 7
    # an address the container does not have: refused, nothing removed
    r = cli(lab, 1, "detach", "10.32.99.99/12", f"netns:{lab.container_ns(1, 1)}", check=False)
    assert r.returncode == 7 and "address 10.32.99.99 is not attached" in r.stderr, r.stderr
    assert json.loads(cli(lab, 1, "ps", "--json").stdout)[0]["cidrs"] == [lab.container_cidr(1, 1)]
    lab.add_container(1)
    r = cli(lab, 1, "detach", f"netns:{lab.container_ns(1, 2)}", check=False)
    assert r.returncode == 7 and "not attached" in r.stderr
    r = cli(lab, 1, "attach", lab.container_cidr(1, 1), f"netns:{lab.container_ns(1, 2)}", check=False)
    assert r.returncode == 4 and "already used" in r.stderr
    assert "vethwepl" not in lab.exec(1, ["ip", "-o", "link"]).stdout.replace(ps[0]["ifname"], "")

    # kill -9 the router while a 10 ms ping runs (8 s): the kernel keeps forwarding
    ping = lab.popen_container(1, 1, ["ping", "-i", "0.01", "-c", "800", "-W", "1", lab.container_ip(2, 1)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    os.kill(router_pid(lab, 1), signal.SIGKILL)
    time.sleep(0.5)
    cli(lab, 1, "launch", lab.host_ip(2))
    out = ping.communicate(timeout=30)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    assert (sent - got) / sent < 0.01, out[-300:]
    wait_fastdp(lab, 1)
    assert lab.exec_container(1, 1, ["ping", "-c", "2", "-i", "0.2", lab.container_ip(2, 1)],
                              check=False).returncode == 0

    # detach leaves no link, no local MAC, no port
    assert cli(lab, 1, "detach", f"netns:{lab.container_ns(1, 1)}").stdout.split() == [lab.container_ip(1, 1)]
    assert "vethwepl" not in lab.exec(1, ["ip", "-o", "link"]).stdout
    ents = json.loads(cli(lab, 1, "report").stdout)["datapath"]["entries"]
    assert ents["local_macs"] == 0 and ents["fdp_ports"] == 0 and ents["port_addrs"] == 0
    assert ents["host_port"] == 1   # the host's own port (the bridge) stays
    assert json.loads(cli(lab, 1, "ps", "--json").stdout) == []


def test_reset_host_removes_programs_devices_links(make_lab) -> None:
    from tests.netns.fastdp_helpers import FastdpLab
    from weave_fdp.datapath.fastdp.host import reset_host
    from weave_fdp.datapath import hooks

    lab = make_lab(hosts=2, topology="full")
    fl = FastdpLab(lab, containers=1)
    fl.close()
    ns = lab.host_ns(1)
    assert hooks.programs("vxlan-6784", netns=ns) == ["fdp_from_tunnel"]
    removed = reset_host(netns=ns)
    assert "vxlan-6784" in removed["links"] and "weave" in removed["links"]
    links = lab.exec(1, ["ip", "-o", "link"]).stdout
    assert "vethwepl" not in links and "vxlan-6784" not in links and " weave" not in links
    assert "ethwe" not in lab.exec_container(1, 1, ["ip", "-o", "link"]).stdout
    assert reset_host(netns=ns) == {"links": [], "pins": []}  # idempotent


def test_attach_refuses_an_address_in_use_on_another_host(make_lab) -> None:
    """Duplicate address detection: ARP probes from the new ethwe cross the overlay."""
    lab = make_lab(hosts=2, topology="full")
    lab.add_container(1)
    lab.add_container(2)
    lab.add_container(2)
    lab.launch_routers()
    taken = lab.container_cidr(1, 1)
    cli(lab, 1, "attach", taken, f"netns:{lab.container_ns(1, 1)}")
    cli(lab, 2, "attach", lab.container_cidr(2, 1), f"netns:{lab.container_ns(2, 1)}")
    wait_fastdp(lab, 2)
    # a fresh container on h2 asks for h1's address: refused, and left without ethwe
    r = cli(lab, 2, "attach", taken, f"netns:{lab.container_ns(2, 2)}", check=False)
    h1_mac = json.loads(cli(lab, 1, "ps", "--json").stdout)[0]["mac"]
    assert r.returncode == 4, r.stderr
    assert f"{lab.container_ip(1, 1)} is already in use on the network" in r.stderr and h1_mac in r.stderr
    links = subprocess.run(["ip", "-n", lab.container_ns(2, 2), "-o", "link"], capture_output=True, text=True).stdout
    assert "ethwe" not in links
    assert len(json.loads(cli(lab, 2, "ps", "--json").stdout)) == 1
    # an attached container asking for an extra address in use keeps what it had
    r = cli(lab, 2, "attach", taken, f"netns:{lab.container_ns(2, 1)}", check=False)
    assert r.returncode == 4
    addrs = subprocess.run(["ip", "-n", lab.container_ns(2, 1), "-o", "-4", "addr", "show", "ethwe"],
                           capture_output=True, text=True).stdout
    assert lab.container_ip(2, 1) in addrs and lab.container_ip(1, 1) not in addrs
    # a free address goes through, and the two containers talk
    free = lab.container_cidr(2, 2)
    assert cli(lab, 2, "attach", free, f"netns:{lab.container_ns(2, 2)}").stdout.strip() == lab.container_ip(2, 2)
    lab.exec_container(2, 2, ["ping", "-c", "1", "-W", "2", lab.container_ip(1, 1)])
    # the container dies (its namespace goes, its veth with it): its address is free again
    gone = json.loads(cli(lab, 2, "ps", "--json").stdout)
    veth = next(p["ifname"] for p in gone if p["container"] == f"netns:{lab.container_ns(2, 2)}")
    subprocess.run(["ip", "netns", "del", lab.container_ns(2, 2)], check=True)
    deadline = time.monotonic() + 10
    while veth in lab.exec(2, ["ip", "-o", "link"]).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    r = cli(lab, 2, "attach", free, f"netns:{lab.container_ns(2, 1)}", check=False)
    assert r.returncode == 0, r.stderr
    assert [p["cidrs"] for p in json.loads(cli(lab, 2, "ps", "--json").stdout)] == [[lab.container_cidr(2, 1), free]]
