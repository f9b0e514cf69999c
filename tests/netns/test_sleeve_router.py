"""The sleeve as the router's overlay: a line h1-h2-h3 with --password, containers wired to `weave`."""

from __future__ import annotations

import json
import time

import pytest

from weave_fdp.lab.lab import weave_command
from weave_fdp.plumbing import links


def wire_container(lab, i: int) -> None:
    lab.add_container(i)
    cns = lab.container_ns(i, 1)
    links.create_bridge("weave", netns=lab.host_ns(i))
    links.create_veth("vethwepl1", "ethwe", netns=lab.host_ns(i), peer_netns=cns, mtu=1376)
    links.set_master("vethwepl1", "weave", lab.host_ns(i))
    links.add_address("ethwe", f"10.32.{i}.1/12", cns)


def connections(lab, i: int) -> list[dict]:
    out = lab.exec(i, [*weave_command(), "status", "connections", "--json"], check=False).stdout
    try:
        return json.loads(out)
    except ValueError:
        return []


def test_router_sleeve_encrypted_line_reports_mode_and_reason(make_lab) -> None:
    lab = make_lab(hosts=3, topology="line")
    for i in (1, 2, 3):
        wire_container(lab, i)
    lab.launch_routers(["--password", "pw", "--no-fastdp"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conns = [c for c in connections(lab, 2) if c.get("state") == "established"]
        if len(conns) == 2 and all(c.get("mode") == "sleeve" for c in conns):
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"h2 connections not all in sleeve: {connections(lab, 2)}")
    assert all(c["mode_reason"] == "fastdp not running on this host" and c["mtu"] == 1399 for c in conns), conns
    r = lab.exec_container(1, 1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.32.3.1"], check=False)
    assert r.returncode == 0, r.stdout
    rep = json.loads(lab.exec(2, [*weave_command(), "report"]).stdout)
    sl = rep["overlays"]["sleeve"]
    assert sl["stats"]["relayed"] >= 6 and all(p["encrypted"] for p in sl["peers"])
