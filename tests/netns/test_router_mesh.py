"""Routers in lab namespaces: topology, routes, discovery, cuts, restarts, passwords, bad input.

Data planes are switched off (WEAVE_FDP_OVERLAYS=none): these tests are about the
control plane on real TCP between real namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weave_fdp import paths
from weave_fdp.lab.lab import Lab, weave_command

W = weave_command()
ENV = {**os.environ, "WEAVE_FDP_OVERLAYS": "none"}


def wait_until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # a router restarting: keep polling
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Routers:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp

    def run(self, i: int, *args: str, check: bool = True) -> Any:
        return self.lab.exec(i, [*W, *args], check=check, env=ENV)

    def launch_argv(self, i: int, state: str = "s") -> list[str]:
        return [*W, "launch", "--nickname", f"h{i}", "--state-dir", str(self.tmp / f"{state}{i}"), "--no-fastdp"]

    def launch(self, i: int, *args: str, state: str = "s", check: bool = True) -> Any:
        return self.lab.exec(i, [*self.launch_argv(i, state), *args], check=check, env=ENV)

    def report(self, i: int) -> dict[str, Any]:
        return json.loads(self.run(i, "report").stdout)

    def names(self) -> dict[str, str]:
        """nickname -> peer name, from every running router."""
        return {r["router"]["nickname"]: r["router"]["name"]
                for r in (self.report(i) for i in range(1, self.lab.hosts + 1))}

    def stop_all(self) -> None:
        for i in range(1, self.lab.hosts + 1):
            self.run(i, "stop", check=False)

    def cleanup(self) -> None:
        """Stop the routers and remove their runtime dirs (logs) under /run/weave-fdp."""
        self.stop_all()
        for i in range(1, self.lab.hosts + 1):
            shutil.rmtree(paths.RUNTIME_ROOT / self.lab.host_ns(i), ignore_errors=True)


@pytest.fixture
def routers(make_lab: Callable[..., Lab], tmp_path: Path) -> Callable[..., Routers]:
    made: list[Routers] = []

    def factory(hosts: int, topology: str) -> Routers:
        r = Routers(make_lab(hosts=hosts, topology=topology), tmp_path)
        made.append(r)
        return r

    yield factory
    for r in made:
        r.cleanup()


def test_line_of_five_routes_cut_and_restart(routers: Callable[..., Routers]) -> None:
    r = routers(5, "line")
    for i in range(1, 6):
        out = r.launch(i, *([r.lab.host_ip(i - 1)] if i > 1 else []))
        assert len(out.stdout.strip().split(":")) == 6  # prints the peer name

    def full(i: int) -> bool:
        rep = r.report(i)
        return len(rep["peers"]) == 5 and all(p["reachable"] for p in rep["peers"])

    for i in range(1, 6):
        wait_until(lambda: full(i), 15, f"h{i} to see 5 reachable peers")
    names = r.names()
    for i in range(1, 6):
        rep = r.report(i)
        for j in range(1, 6):
            if j != i:
                want = names[f"h{i + 1}"] if j > i else names[f"h{i - 1}"]
                assert rep["routes"]["unicast"][names[f"h{j}"]] == want, (i, j)
        text = r.run(i, "status", "peers").stdout
        assert all(f"({n})" in text for n in ("h1", "h2", "h3", "h4", "h5"))
    assert "established" in r.run(2, "status", "connections").stdout

    # cut the underlay between h2 and h3: h1 loses h3..h5, then gets them back
    r.lab.cut(2, 3)
    far = {names["h3"], names["h4"], names["h5"]}

    def lost() -> bool:
        peers = {p["name"]: p for p in r.report(1)["peers"]}
        return all(n not in peers or not peers[n]["reachable"] for n in far)

    wait_until(lost, 20, "h1 to lose h3..h5 after the cut")
    r.lab.restore(2, 3)
    wait_until(lambda: full(1) and full(5), 30, "h1 and h5 to see everyone again")

    # kill -9 h3 and launch it again: the others see a new incarnation (UID)
    old_uid = {p["name"]: p["uid"] for p in r.report(1)["peers"]}[names["h3"]]
    pid = r.report(3)["router"]["pid"]
    os.kill(pid, 9)
    r.launch(3, r.lab.host_ip(2))
    assert r.report(3)["router"]["name"] == names["h3"]  # peer name persisted

    def new_incarnation() -> bool:
        peers = {p["name"]: p for p in r.report(1)["peers"]}
        return names["h3"] in peers and peers[names["h3"]]["uid"] != old_uid and full(1)

    wait_until(new_incarnation, 20, "h1 to see h3's new incarnation")


def test_discovery_turns_star_into_full_mesh(routers: Callable[..., Routers]) -> None:
    r = routers(4, "full")
    hub = r.lab.host_ip(1)
    r.launch(1)
    for i in (2, 3, 4):
        r.launch(i, hub)

    def meshed(i: int) -> bool:
        rep = r.report(i)
        return sum(c["state"] == "established" for c in rep["connections"]) == 3 and len(rep["peers"]) == 4

    for i in range(1, 5):
        wait_until(lambda: meshed(i), 20, f"h{i} to have 3 established connections")
    r.stop_all()
    # again without discovery: leaves keep only the hub, but still know everyone
    r.launch(1, "--no-discovery", state="n")
    for i in (2, 3, 4):
        r.launch(i, hub, "--no-discovery", state="n")
    for i in (2, 3, 4):
        wait_until(lambda: len(r.report(i)["peers"]) == 4, 15, f"h{i} to know 4 peers")
    time.sleep(1.0)
    for i in (2, 3, 4):
        conns = r.report(i)["connections"]
        assert [c["address"] for c in conns] == [f"{hub}:6783"], conns
    assert r.report(2)["routes"]["unicast"][r.names()["h3"]] == r.names()["h1"]


def test_protocol_2_router_in_a_protocol_3_mesh(routers: Callable[..., Routers]) -> None:
    """A router that offers at most protocol 2 (as the release before binary entries) among
    protocol 3 routers: each link speaks the highest version both ends know, entries pass
    between the two formats, and every router learns the whole mesh."""
    r = routers(3, "full")
    env2 = {**ENV, "WEAVE_FDP_PROTOCOL_MAX": "2"}
    bad = r.lab.exec(2, [*r.launch_argv(2)], env={**ENV, "WEAVE_FDP_PROTOCOL_MAX": "9"}, check=False)
    assert bad.returncode != 0 and "WEAVE_FDP_PROTOCOL_MAX" in bad.stderr
    r.launch(1)
    r.lab.exec(2, [*r.launch_argv(2, state="p"), r.lab.host_ip(1)], env=env2)
    r.launch(3, r.lab.host_ip(1))

    def meshed(i: int) -> bool:
        rep = r.report(i)
        return (sum(c["state"] == "established" for c in rep["connections"]) == 2 and len(rep["peers"]) == 3
                and all(p["reachable"] for p in rep["peers"]))

    for i in (1, 2, 3):
        wait_until(lambda: meshed(i), 20, f"h{i} to know 3 reachable peers over 2 established links")
    names = r.names()
    for i in (1, 2, 3):
        versions = {c["peer"]: c["protocol_version"] for c in r.report(i)["connections"]}
        for j in (1, 2, 3):
            if j != i:
                assert versions[names[f"h{j}"]] == (2 if 2 in (i, j) else 3), (i, j, versions)
    # a change at the protocol 3 routers reaches the protocol 2 one, and back: h3 leaves
    r.run(3, "stop")
    wait_until(lambda: names["h3"] not in {p["name"] for p in r.report(2)["peers"] if p["reachable"]}, 20,
               "h2 to lose h3")
    r.launch(3, r.lab.host_ip(2), state="q")
    for i in (1, 2, 3):
        wait_until(lambda: meshed(i), 20, f"h{i} to know the relaunched h3")


def test_password_mismatch_refused_on_both_sides(routers: Callable[..., Routers]) -> None:
    r = routers(2, "full")
    r.launch(1, "--password", "alpha")
    r.launch(2, "--password", "beta", r.lab.host_ip(1))

    def failed_both(reason: str) -> bool:
        c1, c2 = r.report(1)["connections"], r.report(2)["connections"]
        return (any(c["state"] == "failed" and reason in c["info"] for c in c1)
                and any(c["state"] in ("failed", "retrying") and reason in c["info"] for c in c2))

    wait_until(lambda: failed_both("password mismatch"), 10, "both sides to report a password mismatch")
    assert len(r.report(1)["peers"]) == 1 and len(r.report(2)["peers"]) == 1  # nothing believed
    assert "password mismatch" in r.run(2, "status", "connections").stdout
    r.run(2, "stop")
    r.launch(2, r.lab.host_ip(1), state="nopw")  # no password at all
    wait_until(lambda: failed_both("password mismatch"), 10, "mismatch when one side has no password")
    r.run(2, "stop")
    r.launch(2, "--password", "alpha", r.lab.host_ip(1), state="ok")
    wait_until(lambda: any(c["state"] == "established" and c["info"] == "encrypted"
                           for c in r.report(1)["connections"]), 10, "an encrypted connection")


GARBAGE = r"""
import os, socket, time
host = "{host}"
for payload in [os.urandom(64), b"WFDP\x01\x01" + os.urandom(500), b"WFDP\x09\x09", b"GET / HTTP/1.0\r\n\r\n",
                b"WFDP\x01\x01\xff\xff\xff\xff" + b"x" * 100]:
    s = socket.create_connection((host, 6783), 2); s.sendall(payload); time.sleep(0.05); s.close()
half = [socket.create_connection((host, 6783), 2) for _ in range(20)]   # half-open: never speak
half[0].sendall(b"WFDP")
time.sleep(1.0)
"""


def test_garbage_and_half_open_leave_router_serving(routers: Callable[..., Routers]) -> None:
    r = routers(2, "full")
    r.launch(1)
    r.lab.exec(2, ["python3", "-c", GARBAGE.format(host=r.lab.host_ip(1))], timeout=30)
    assert r.report(1)["router"]["name"]
    r.launch(2, r.lab.host_ip(1))
    wait_until(lambda: any(c["state"] == "established" for c in r.report(1)["connections"]), 10,
               "a real peer to connect after the garbage")


def test_bad_input_one_line_and_exit_codes(routers: Callable[..., Routers], tmp_path: Path) -> None:
    r = routers(2, "full")
    cp = r.run(1, "connect", r.lab.host_ip(2), check=False)
    assert cp.returncode == 3 and "weave-fdp launch" in cp.stderr
    cp = r.launch(1, "--name", "nonsense", check=False)
    assert cp.returncode == 2 and "--name" in cp.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cp = r.run(1, "launch", "--state-dir", str(blocker / "sub"), check=False)
    assert cp.returncode != 0 and "state dir" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    r.launch(1)
    cp = r.launch(1, check=False)
    assert cp.returncode == 4 and "already running" in cp.stderr
    cp = r.run(1, "connect", "no-such-host.invalid", check=False)
    assert cp.returncode == 7 and "does not resolve" in cp.stderr
    cp = r.run(1, "connect", "192.0.2.1:99999", check=False)
    assert cp.returncode == 2
    r.run(1, "connect", "192.0.2.77")  # nobody there: accepted, shown with its retry
    wait_until(lambda: any(c["address"] == "192.0.2.77:6783" and c["state"] in ("failed", "retrying")
                           for c in r.report(1)["connections"]), 15, "the unreachable target to show as failed")
    assert "192.0.2.77:6783" in r.run(1, "status", "targets").stdout
    # between attempts it shows its retry time (while dialing again it shows the last error)
    wait_until(lambda: "retry" in r.run(1, "status", "connections").stdout, 30, "the retry time to show")
    # a port in use by someone else
    r.lab.popen(2, ["python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',6783)); "
                                     "s.listen(); time.sleep(30)"])
    time.sleep(0.3)
    cp = r.launch(2, check=False)
    assert cp.returncode == 1 and "TCP port 6783" in cp.stderr
    assert r.report(1)["router"]["name"]  # still serving


SCRAPE = r"""
import sys, urllib.request
print(urllib.request.urlopen("http://{addr}/metrics", timeout=5).read().decode())
"""


def scrape(r: Routers, i: int, addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape /metrics from inside host i's namespace; (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = r.lab.exec(i, ["python3", "-c", SCRAPE.format(addr=addr)], timeout=15).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_endpoint_scraped_and_bad_addresses(routers: Callable[..., Routers]) -> None:
    r = routers(2, "full")
    r.launch(1, "--metrics-addr", "0.0.0.0:6782")
    r.launch(2, r.lab.host_ip(1), "--metrics-addr", ":6782")
    wait_until(lambda: any(c["state"] == "established" for c in r.report(1)["connections"])
               and len(r.report(1)["peers"]) == 2 and all(p["reachable"] for p in r.report(1)["peers"]),
               10, "h1 and h2 to connect")
    m = scrape(r, 1, f"{r.lab.host_ip(1)}:6782")
    assert m[("weave_fdp_up", ())] == 1
    assert m[("weave_fdp_peers", (("reachable", "true"),))] == 2
    assert m[("weave_fdp_peers", (("reachable", "false"),))] == 0
    assert m[("weave_fdp_connections", (("mode", "none"), ("state", "established")))] == 1
    names = r.names()
    tx = [v for (n, labels), v in m.items()
          if n == "weave_fdp_connection_tx_bytes_total" and ("peer", names["h2"]) in labels]
    assert tx and tx[0] > 0
    # h2 serves on every address too, scraped over its loopback
    m2 = scrape(r, 2, "127.0.0.1:6782")
    assert m2[("weave_fdp_peers", (("reachable", "true"),))] == 2
    # a bad address and a busy port fail the launch with one line, and h1 keeps serving
    r.run(2, "stop")
    cp = r.launch(2, "--metrics-addr", "nonsense", state="bad", check=False)
    assert cp.returncode == 2 and "--metrics-addr" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    # SO_REUSEADDR: the scrape above may have left 6782 in TIME_WAIT
    blocker = r.lab.popen(2, ["python3", "-c", "import socket,time; s=socket.socket(); "
                                               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                               "s.bind(('0.0.0.0',6782)); s.listen(); time.sleep(30)"])
    time.sleep(0.3)
    try:
        assert blocker.poll() is None, "the port blocker did not start"
        cp = r.launch(2, "--metrics-addr", "0.0.0.0:6782", state="busy", check=False)
    finally:
        blocker.kill()
        blocker.wait()
    assert cp.returncode == 2 and "cannot serve metrics on 0.0.0.0:6782" in cp.stderr, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1
    assert not r.run(2, "status", check=False).returncode == 0  # nothing left running on h2
    assert scrape(r, 1, "127.0.0.1:6782")[("weave_fdp_up", ())] == 1
