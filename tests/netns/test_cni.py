"""weave-fdp-cni over real routers in lab namespaces, invoked as a runtime invokes it
(CNI_* environment, configuration on stdin, in the host's namespace): ADD with a
delegated IPAM plugin (Debian's host-local) and with explicit addresses, containers on
two hosts ping, CHECK, DEL twice, and bad input that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.netns.test_router_mesh import Routers, routers, wait_until  # noqa: F401

HOST_LOCAL_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI = [sys.executable, "-m", "weave_fdp.cni.plugin"]


def _cni_path() -> str:
    return ":".join(d for d in HOST_LOCAL_DIRS if os.path.exists(os.path.join(d, "host-local")))


pytestmark = pytest.mark.skipif(not _cni_path(), reason="host-local CNI plugin missing: "
                                "apt-get install containernetworking-plugins (scripts/install.sh does)")


class Cni:
    def __init__(self, r: Routers, data_dir: Path) -> None:
        self.r, self.data_dir = r, data_dir

    def config(self, *, ipam: bool = True, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {"cniVersion": version, "name": "weave", "type": "weave-fdp-cni", **extra}
        if ipam:
            cfg["ipam"] = {"type": "host-local", "subnet": "10.32.0.0/12", "rangeStart": "10.32.100.1",
                           "rangeEnd": "10.32.100.50", "dataDir": str(self.data_dir)}
        return cfg

    def run(self, i: int, command: str, cid: str, netns: str, cfg: dict[str, Any] | bytes,
            ifname: str = "eth0", args: str = "") -> tuple[int, Any]:
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": _cni_path()}
        raw = cfg if isinstance(cfg, bytes) else json.dumps(cfg).encode()
        cp = self.r.lab.exec(i, CNI, check=False, env=env, input=raw.decode(errors="replace"), timeout=90)
        out = json.loads(cp.stdout) if cp.stdout.strip() else None
        if cp.returncode != 0:
            assert out is not None and isinstance(out.get("code"), int), (cp.stdout, cp.stderr)
            assert len(cp.stderr.strip().splitlines()) == 1, cp.stderr   # one clear line for people
        return cp.returncode, out

    def allocations(self) -> list[str]:
        d = self.data_dir / "weave"
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []


def links(r: Routers, ns: str) -> str:
    return r.lab.exec(1, ["ip", "-n", ns, "-o", "link"]).stdout


@pytest.fixture
def cni(routers: Callable[..., Routers], tmp_path: Path) -> Cni:
    r = routers(2, "full")
    sleeve = {k: v for k, v in os.environ.items() if k != "WEAVE_FDP_OVERLAYS"}   # a data plane: the sleeve
    r.lab.exec(1, r.launch_argv(1), env=sleeve, timeout=60)
    r.lab.exec(2, [*r.launch_argv(2), r.lab.host_ip(1)], env=sleeve, timeout=60)
    return Cni(r, tmp_path / "ipam")


def test_add_check_del_across_two_hosts(cni: Cni) -> None:
    r = cni.r
    c1, c2 = r.lab.add_container(1), r.lab.add_container(2)
    p1, p2 = f"/run/netns/{c1}", f"/run/netns/{c2}"
    rc, res1 = cni.run(1, "ADD", "aaaa1111", p1, cni.config(), args="IgnoreUnknown=1;K8S_POD_NAME=cniweb")
    assert rc == 0, res1
    assert res1["cniVersion"] == "1.0.0"
    assert res1["interfaces"][1]["name"] == "eth0" and res1["interfaces"][1]["sandbox"] == p1
    assert res1["interfaces"][0]["name"].startswith("vethwepl")
    ip1 = res1["ips"][0]["address"]
    assert ip1.startswith("10.32.100.") and ip1.endswith("/12") and res1["ips"][0]["interface"] == 1
    assert cni.allocations() == [ip1.split("/")[0]]
    rc, res2 = cni.run(2, "ADD", "bbbb2222", p2, cni.config(ipam=False, version="0.4.0"), args="IP=10.32.2.5")
    assert rc == 0, res2
    assert res2["ips"] == [{"address": "10.32.2.5/12", "interface": 1, "version": "4"}]
    assert "eth0" in links(r, c1) and "eth0" in links(r, c2)
    wait_until(lambda: r.lab.exec_container(1, 1, ["ping", "-c", "1", "-W", "1", "10.32.2.5"],
                                            check=False).returncode == 0, 30, "c1 on h1 to ping c1 on h2")
    # the name Podman passes (K8S_POD_NAME) is in weaveDNS, seen from the other host
    wait_until(lambda: r.run(2, "dns-lookup", "cniweb", check=False).stdout.split() == [ip1.split("/")[0]], 15,
               "h2 to resolve cniweb")
    assert res1["dns"]["nameservers"] == ["169.254.53.53"] and res1["dns"]["search"] == ["weave.local"]
    ps = r.run(1, "ps").stdout
    assert "aaaa1111" in ps and ip1 in ps and ps.splitlines()[0].startswith("weave:expose ")
    # CHECK: fine as made; an address removed behind its back fails with what is missing
    rc, out = cni.run(1, "CHECK", "aaaa1111", p1, {**cni.config(), "prevResult": res1})
    assert (rc, out) == (0, None)
    r.lab.exec(1, ["ip", "-n", c1, "addr", "del", ip1, "dev", "eth0"])
    rc, out = cni.run(1, "CHECK", "aaaa1111", p1, {**cni.config(), "prevResult": res1})
    assert rc == 1 and out["code"] == 100 and ip1 in out["msg"]
    # DEL twice: both succeed; the interface and the host-local allocation are gone
    for _ in range(2):
        rc, out = cni.run(1, "DEL", "aaaa1111", p1, {**cni.config(), "prevResult": res1})
        assert (rc, out) == (0, None)
    assert "eth0" not in links(r, c1) and cni.allocations() == []
    assert "aaaa1111" not in r.run(1, "ps").stdout
    wait_until(lambda: r.run(2, "dns-lookup", "cniweb", check=False).returncode == 7, 15, "cniweb to leave weaveDNS")
    # the router's IPAM (no ipam in the configuration): a container restarted by its runtime
    # (DEL, then ADD in a new namespace, same container id) gets its address back
    ca, cb = r.lab.add_container(1), r.lab.add_container(1)
    rc, res_a = cni.run(1, "ADD", "dddd4444", f"/run/netns/{ca}", cni.config(ipam=False))
    assert rc == 0, res_a
    assert cni.run(1, "DEL", "dddd4444", f"/run/netns/{ca}", cni.config(ipam=False)) == (0, None)
    rc, res_b = cni.run(1, "ADD", "dddd4444", f"/run/netns/{cb}", cni.config(ipam=False))
    assert rc == 0 and res_b["ips"][0]["address"] == res_a["ips"][0]["address"], (res_a, res_b)
    assert cni.run(1, "DEL", "dddd4444", f"/run/netns/{cb}", cni.config(ipam=False)) == (0, None)
    # DEL of a namespace that no longer exists, and with no CNI_NETNS at all
    assert cni.run(1, "DEL", "aaaa1111", "/run/netns/gone-xyz", cni.config()) == (0, None)
    assert cni.run(1, "DEL", "aaaa1111", "", cni.config()) == (0, None)
    # DEL while the router is down still removes our interface (host end of the veth)
    r.run(2, "stop")
    rc, out = cni.run(2, "DEL", "bbbb2222", p2, cni.config(ipam=False, version="0.4.0"))
    assert (rc, out) == (0, None)
    assert "eth0" not in links(r, c2) and "vethwepl" not in r.lab.exec(2, ["ip", "-o", "link"]).stdout


def test_bad_input_leaves_nothing_behind(cni: Cni) -> None:
    r = cni.r
    c1 = r.lab.add_container(1)
    p1 = f"/run/netns/{c1}"
    before = r.lab.exec(1, ["ip", "-o", "link"]).stdout.count("vethwepl")
    cases = [
        ({"cniVersion": "9.0.0"}, p1, "eth0", 1),
        (b"{broken", p1, "eth0", 6),
        ({}, "/run/netns/no-such-ns", "eth0", 3),
        ({}, p1, "bad/name", 4),
        ({"ipam": {"type": "no-such-ipam"}}, p1, "eth0", 7),
    ]
    for patch, netns, ifname, code in cases:
        cfg = patch if isinstance(patch, bytes) else {**cni.config(), **patch}
        rc, out = cni.run(1, "ADD", "cccc3333", netns, cfg, ifname=ifname)
        assert rc == 1 and out["code"] == code, (patch, out)
    # the interface name is taken by something else: the router refuses, IPAM is rolled back
    r.lab.exec(1, ["ip", "-n", c1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])
    rc, out = cni.run(1, "ADD", "cccc3333", p1, cni.config())
    assert rc == 1 and out["code"] == 100 and "eth0" in out["msg"], out
    assert cni.allocations() == []
    r.lab.exec(1, ["ip", "-n", c1, "link", "del", "eth0"])
    # the router is not running: try again later, with the advice, nothing allocated
    r.run(1, "stop")
    rc, out = cni.run(1, "ADD", "cccc3333", p1, cni.config())
    assert rc == 1 and out["code"] == 11 and "not running" in out["msg"] and "retry" in out["details"]
    assert cni.allocations() == []
    assert r.lab.exec(1, ["ip", "-o", "link"]).stdout.count("vethwepl") == before
    assert "eth0" not in links(r, c1)
