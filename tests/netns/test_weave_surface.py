"""Weave's surface over real routers in lab namespaces: the target list through launch,
connect, forget, restarts and --resume (as Weave's own tests check it); connect --replace;
--name short forms, WEAVE_MTU, WEAVE_NO_FASTDP; Weave's metric names on the default address;
`version`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from tests.netns.test_router_mesh import ENV, Routers, routers, scrape, wait_until  # noqa: F401

W1, W2, W3 = (f"192.0.2.{i}:6783" for i in (1, 2, 3))


def targets(r: Routers, i: int) -> set[str]:
    """`status targets` of host i, as a set of lines."""
    return set(r.run(i, "status", "targets").stdout.split())


def kill_router(r: Routers, i: int) -> None:
    """SIGKILL host i's router (a crash) and wait until its API is gone."""
    os.kill(r.report(i)["router"]["pid"], 9)
    wait_until(lambda: r.run(i, "status", check=False).returncode == 3, 10, f"h{i}'s router to be gone")


def test_target_list_as_weave_keeps_it(routers: Callable[..., Routers]) -> None:
    r = routers(3, "full")
    r.launch(2)
    r.launch(3)
    r.launch(1, W1, W2)                     # its own address too, as in Weave's test
    assert targets(r, 1) == {W1, W2}
    r.run(1, "forget", W1)
    r.run(1, "connect", W3)
    assert targets(r, 1) == {W2, W3}
    kill_router(r, 1)                       # a restart (what a supervisor does: launch --resume)
    r.launch(1, "--resume")
    assert targets(r, 1) == {W2, W3}
    wait_until(lambda: sum(c["state"] == "established" for c in r.report(1)["connections"]) == 2, 15,
               "h1 to reconnect to h2 and h3 after the restart")
    r.run(1, "stop")
    r.launch(1, "--resume")
    assert targets(r, 1) == {W2, W3}
    r.run(1, "stop")
    r.launch(1, W1, W2)                     # a new list replaces the saved one
    assert targets(r, 1) == {W1, W2}
    kill_router(r, 1)
    r.launch(1, "--resume", W3)             # --resume keeps the saved list: W3 only seeds an empty state
    assert targets(r, 1) == {W1, W2}
    r.run(1, "stop")
    r.launch(1)                             # launch without peers: an empty list
    assert targets(r, 1) == set()


def test_connect_replace_drops_the_replaced(routers: Callable[..., Routers]) -> None:
    r = routers(3, "full")
    r.launch(2)
    r.launch(3)
    r.launch(1, W2, "192.0.2.99")           # one real peer, one nobody answers (retrying)
    wait_until(lambda: any(c["state"] == "established" and c["address"] == W2
                           for c in r.report(1)["connections"]), 15, "h1 to connect to h2")
    wait_until(lambda: any(c["address"] == "192.0.2.99:6783" and c["state"] in ("failed", "retrying")
                           for c in r.report(1)["connections"]), 15, "the dead target to fail")
    out = r.run(1, "connect", "--replace", W3)
    assert out.returncode == 0
    assert targets(r, 1) == {W3}

    def only_h3() -> bool:
        conns = r.report(1)["connections"]
        return [c["address"] for c in conns] == [W3] and conns[0]["state"] == "established"

    wait_until(only_h3, 15, "h1's connections to be exactly the new target, established")
    assert "192.0.2.99" not in r.run(1, "status", "connections").stdout   # no retry left behind
    assert r.report(1)["router"]["terminations"] >= 1


def test_name_forms_env_and_weave_metrics(routers: Callable[..., Routers]) -> None:
    r = routers(2, "full")
    env = {**ENV, "WEAVE_MTU": "1400"}
    r.lab.exec(1, [*r.launch_argv(1), "--name", "::1"], env=env)
    assert r.report(1)["router"]["name"] == "00:00:00:00:00:01"
    link = json.loads(r.lab.exec(1, ["ip", "-j", "link", "show", "weave"]).stdout)[0]
    assert link["mtu"] == 1400                                        # WEAVE_MTU reached the bridge
    cp = r.lab.exec(2, [*r.launch_argv(2), "--name", "1::2::3"], env=ENV, check=False)
    assert cp.returncode == 2 and "--name" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    cp = r.lab.exec(2, [*r.launch_argv(2), "--mtu", "99"], env=ENV, check=False)
    assert cp.returncode == 2 and "--mtu" in cp.stderr
    argv = [a for a in r.launch_argv(2) if a != "--no-fastdp"]
    with_dp = {k: v for k, v in ENV.items() if k != "WEAVE_FDP_OVERLAYS"}
    r.lab.exec(2, [*argv, r.lab.host_ip(1)], env={**with_dp, "WEAVE_NO_FASTDP": "1"}, timeout=60)
    assert r.report(2)["router"]["overlays"] == ["sleeve"]           # WEAVE_NO_FASTDP as --no-fastdp
    wait_until(lambda: any(c["state"] == "established" for c in r.report(1)["connections"]), 15,
               "h1 and h2 to connect")
    m = scrape(r, 1, "127.0.0.1:6782")                                # the default address
    assert m[("weave_connections", (("encryption", ""), ("state", "established"), ("type", "unknown")))] == 1
    assert m[("weave_connection_terminations_total", ())] == 0
    assert m[("weave_fdp_up", ())] == 1
    assert m[("weave_max_ips", ())] == 1 << 20                         # IPAM's range, 10.32.0.0/12
    assert m[("weave_ips", (("state", "local-used"),))] == 0
    r.run(1, "dns-add", "10.32.9.9", "-h", "ext.weave.local")
    wait_until(lambda: scrape(r, 1, "127.0.0.1:6782")[("weave_dns_entries", (("state", "local"),))] == 1, 10,
               "weave_dns_entries to count the name added here")
    r.run(2, "stop")
    wait_until(lambda: scrape(r, 1, "127.0.0.1:6782")[("weave_connection_terminations_total", ())] == 1, 15,
               "the termination to be counted")
    out = r.run(1, "version").stdout
    assert "weave-fdp 0.1.0" in out and "router 0.1.0" in out and "00:00:00:00:00:01" in out
    r.run(1, "stop")
    assert "router not running" in r.run(1, "version").stdout
