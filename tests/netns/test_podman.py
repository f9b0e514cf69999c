"""Podman (Debian's 4.3) end to end: containers whose network the weave-fdp-cni plugin
makes, on one host and on two lab hosts, ping each other; `podman rm` gives the address
back. The Docker Engine API path: `podman system service` serves it on a socket, and
attach/ps/detach take the container's name and id through it; bad names and an engine
that does not answer give one line and an exit code. Skipped, with the reason, only
where Podman cannot run a container at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netns.podman_helpers import IMAGE, Podman, missing_tools
from tests.netns.test_router_mesh import Routers, routers, wait_until  # noqa: F401

REPO = str(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.podman


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    pm = Podman(tmp_path_factory.mktemp("podman"), os.environ.get("PYTHONPATH") or REPO)
    try:
        pm.build_image()
        why = pm.usable()
        if why:
            print(why)
            pytest.skip(why)
        yield pm
    finally:
        pm.cleanup()


@pytest.fixture
def lab2(routers: Callable[..., Routers], podman: Podman) -> Iterator[Routers]:
    r = routers(2, "full")
    sleeve = {k: v for k, v in os.environ.items() if k != "WEAVE_FDP_OVERLAYS"}
    r.lab.exec(1, r.launch_argv(1), env=sleeve, timeout=60)
    r.lab.exec(2, [*r.launch_argv(2), r.lab.host_ip(1)], env=sleeve, timeout=60)
    yield r
    podman.run("rm", "--all", "--force", "--time", "0", check=False)   # CNI DEL while the routers run


def ping(podman: Podman, r: Routers, i: int, name: str, ip: str) -> bool:
    return podman.run("exec", name, "ping", "-c", "1", "-W", "1", ip, netns=r.lab.host_ns(i),
                      check=False).returncode == 0


def test_containers_on_one_and_two_hosts(lab2: Routers, podman: Podman) -> None:
    r = lab2
    h1, h2 = r.lab.host_ns(1), r.lab.host_ns(2)
    for name, ns in (("pc1", h1), ("pc2", h1), ("pc3", h2)):
        podman.run("run", "-d", "--name", name, "--network", "weave", IMAGE, "sleep", "600", netns=ns)
    ip1, ip2, ip3 = (podman.ip_of(n) for n in ("pc1", "pc2", "pc3"))
    assert len({ip1, ip2, ip3}) == 3 and all(ip.startswith("10.") for ip in (ip1, ip2, ip3))
    wait_until(lambda: ping(podman, r, 1, "pc1", ip2), 20, "pc1 to ping pc2 on the same host")
    wait_until(lambda: ping(podman, r, 1, "pc1", ip3), 30, "pc1 on h1 to ping pc3 on h2")
    assert ping(podman, r, 2, "pc3", ip1)
    # names through weaveDNS (Podman passes the container's name to the plugin)
    def resolves(i: int, name: str, target: str, ip: str) -> bool:
        out = podman.run("exec", name, "nslookup", target, "169.254.53.53", netns=r.lab.host_ns(i), check=False)
        return ip in out.stdout.split("Name:")[-1]

    wait_until(lambda: resolves(1, "pc1", "pc3", ip3), 20, "pc1 to resolve pc3 (on h2) through weaveDNS")
    assert resolves(2, "pc3", "pc2.weave.local", ip2)
    ps = r.run(1, "ps").stdout.splitlines()
    assert ps[0].startswith("weave:expose ")
    rows = {line.split()[0]: line.split()[2] for line in ps[1:]}
    assert rows == {podman.full_id("pc1")[:12]: f"{ip1}/12", podman.full_id("pc2")[:12]: f"{ip2}/12"}
    # podman restart: CNI DEL, then ADD in a new namespace: the same address
    podman.run("restart", "--time", "0", "pc1", netns=h1)
    assert podman.ip_of("pc1") == ip1
    wait_until(lambda: ping(podman, r, 1, "pc1", ip3), 30, "pc1 to ping pc3 again after its restart")
    # podman rm: CNI DEL; the interface goes at once, the address once the grace (30 s) is over
    allocated = r.report(1)["ipam"]["allocated"]
    podman.run("rm", "--force", "--time", "0", "pc2", netns=h1)
    assert podman.full_id("pc1")[:12] in r.run(1, "ps").stdout and ip2 not in r.run(1, "ps").stdout
    assert r.lab.exec(1, ["ip", "-o", "link"]).stdout.count("vethwepl") == 1
    wait_until(lambda: r.report(1)["ipam"]["allocated"] == allocated - 1, 60, "IPAM to free pc2's address")


def test_docker_api_path(lab2: Routers, podman: Podman, tmp_path: Path) -> None:
    r = lab2
    sock = tmp_path / "podman.sock"
    svc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=podman.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: sock.exists(), 20, "podman system service to open its socket")
        podman.run("run", "-d", "--name", "dk1", "--network", "none", IMAGE, "sleep", "600", netns=r.lab.host_ns(1))
        short = podman.full_id("dk1")[:12]
        env = {**os.environ, "WEAVE_FDP_OVERLAYS": "none", "DOCKER_HOST": f"unix://{sock}"}

        def weave(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return r.lab.exec(1, [*r.launch_argv(1)[:3], *args], env=env, check=check, timeout=60)

        ip = weave("attach", "dk1").stdout.strip()            # by name, address from IPAM
        assert ip.startswith("10.")
        assert f"{short} " in weave("ps").stdout
        assert weave("ps", "dk1").stdout.split()[0] == short   # ps of a name prints its id
        assert weave("attach", short).stdout.strip() == ip     # by id: the same container, same address
        assert ip in podman.run("exec", "dk1", "ip", "-4", "addr", "show", "ethwe", netns=r.lab.host_ns(1)).stdout
        assert weave("dns-lookup", "dk1").stdout.split() == [ip]          # its name, from the engine
        weave("dns-add", "dk1", "-h", "extra.weave.local")              # dns-add by container name
        assert weave("dns-lookup", "extra").stdout.split() == [ip]
        cp = weave("dns-add", "no-such-container", "-h", "x.weave.local", check=False)
        assert cp.returncode == 7 and len(cp.stderr.strip().splitlines()) == 1
        weave("detach", "dk1")
        assert short not in weave("ps").stdout
        cp = weave("attach", "no-such-container", check=False)
        assert cp.returncode == 7 and "no container 'no-such-container'" in cp.stderr
        assert len(cp.stderr.strip().splitlines()) == 1
        dead = tmp_path / "dead.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(dead))                                       # there, but nobody answers
        try:
            cp = r.lab.exec(1, [*r.launch_argv(1)[:3], "attach", "dk1"], check=False, timeout=60,
                            env={**env, "DOCKER_HOST": f"unix://{dead}"})
        finally:
            s.close()
        assert cp.returncode == 1 and f"{dead} does not answer" in cp.stderr
        assert len(cp.stderr.strip().splitlines()) == 1
        assert short not in weave("ps").stdout                  # nothing left behind
    finally:
        svc.terminate()
        svc.wait(timeout=20)
