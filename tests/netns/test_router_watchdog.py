"""The router puts back what was removed under its fastdp: device, programs, bridge, the host's port."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.netns.test_fastdp_router import attached_pair, cli, wait_fastdp
from weave_fdp.datapath import hooks

pytestmark = pytest.mark.timeout(300)


def wait_repaired(lab, i: int, repairs: int, timeout: float = 60.0) -> dict:
    """A repair reloads the programs (a compile): 11-17 s seen at load average 12."""
    deadline = time.monotonic() + timeout
    wd: dict = {}
    while time.monotonic() < deadline:
        rep = json.loads(cli(lab, i, "report").stdout)
        wd = rep["overlays"]["fastdp"]["watchdog"]
        if wd["repairs"] >= repairs and hooks.programs("vxlan-6784", netns=lab.host_ns(i)) == ["fdp_from_tunnel"]:
            return wd
        time.sleep(0.25)
    pytest.fail(f"h{i} not repaired: {wd}")


def ping_ok(lab, src: tuple[int, int], dst: tuple[int, int]) -> bool:
    return lab.exec_container(*src, ["ping", "-c", "3", "-i", "0.2", "-W", "1", lab.container_ip(*dst)],
                              check=False).returncode == 0


def test_device_programs_and_bridge_removed_under_the_router_come_back(make_lab) -> None:
    lab = attached_pair(make_lab)
    assert ping_ok(lab, (1, 1), (2, 1))
    ns = lab.host_ns(1)
    port = json.loads(cli(lab, 1, "ps", "--json").stdout)[0]["ifname"]

    # 1. the VXLAN device deleted
    lab.exec(1, ["ip", "link", "del", "vxlan-6784"])
    wd = wait_repaired(lab, 1, 1)
    assert "device vxlan-6784 is gone" in wd["last_damage"] and wd["fatal"] is None
    wait_fastdp(lab, 1)
    assert ping_ok(lab, (1, 1), (2, 1))

    # 2. the container port's program detached (at tcx, or the whole clsact qdisc removed)
    assert hooks.detach_all(port, netns=ns)
    assert hooks.programs(port, netns=ns) == []
    wd = wait_repaired(lab, 1, 2)
    assert f"fdp_from_container is not attached to {port}" in wd["last_damage"]
    assert hooks.programs(port, netns=ns) == ["fdp_from_container"]
    assert ping_ok(lab, (1, 1), (2, 1))

    # 3. the bridge deleted: back, with the container's veth and the sleeve's end on it
    lab.exec(1, ["ip", "link", "del", "weave"])
    wd = wait_repaired(lab, 1, 3)
    assert "bridge weave is gone" in wd["last_damage"]
    links = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "master", "weave"],
                           capture_output=True, text=True).stdout
    assert port in links and "vethwe-bridge" in links
    wait_fastdp(lab, 1)
    assert ping_ok(lab, (1, 1), (2, 1))

    # 4. the host's port (the program at the bridge's egress) detached
    assert hooks.programs("weave", direction="egress", netns=ns) == ["fdp_from_container"]
    assert hooks.detach("weave", "fdp_from_container", direction="egress", netns=ns)
    assert hooks.programs("weave", direction="egress", netns=ns) == []
    wd = wait_repaired(lab, 1, 4)
    assert "fdp_from_container is not attached to weave egress (the host's port)" in wd["last_damage"]
    assert hooks.programs("weave", direction="egress", netns=ns) == ["fdp_from_container"]
    assert ping_ok(lab, (1, 1), (2, 1))
    logs = "".join(p.read_text() for p in Path("/run/weave-fdp").glob(f"{lab.prefix}-h1/*.log"))
    assert logs.count("datapath repaired") == 4

    # weaveDNS's names are back in the kernel (a repair restarts the datapath with them gone)
    def kernel_answered() -> int:
        return int(json.loads(cli(lab, 1, "report").stdout)["dns"]["kernel"]["answered"])

    name, want = f"{lab.container_ns(2, 1)}.weave.local", [lab.container_ip(2, 1)]
    deadline = time.monotonic() + 30
    while True:
        before = kernel_answered()
        got = lab.exec_container(1, 1, ["dig", "+short", "+time=2", "+tries=1", "@169.254.53.53", name],
                                 check=False).stdout.split()
        if got == want and kernel_answered() > before:
            break
        assert time.monotonic() < deadline, f"{name}: {got}, not answered in the kernel after the repairs"
        time.sleep(0.5)
    # and the userspace server, bound anew to the bridge made again, answers what the kernel passes on
    rev = lab.exec_container(1, 1, ["dig", "+short", "+time=2", "+tries=3", "@169.254.53.53", "-x",
                                    lab.container_ip(2, 1)], check=False).stdout.split()
    assert rev == [name + "."], rev
    assert json.loads(cli(lab, 1, "report").stdout)["dns"]["rebinds"] >= 1
