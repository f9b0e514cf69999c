"""`weave-fdp top`, `flows` and the metrics endpoint against real routers in a lab.

One lab (a line h1-h2-h3, routers launched) serves the module; it is removed at
the end whatever happens. Counter accuracy: exactly N packets and N x size on a
flow, on fastdp and on sleeve.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from weave_fdp.lab.lab import Lab, lab_namespaces, weave_command

WEAVE = weave_command()


def unique_prefix() -> str:
    return "t" + secrets.token_hex(3)[:5]


def report(lab: Lab, i: int) -> dict:
    return json.loads(lab.exec(i, [*WEAVE, "report"]).stdout)


def wait_converged(lab: Lab, i: int, peers: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    rep: dict = {}
    while time.monotonic() < deadline:
        rep = report(lab, i)
        if sum(1 for p in rep.get("peers", []) if p.get("reachable")) == peers:
            return rep
        time.sleep(0.3)
    pytest.fail(f"h{i} never saw {peers} reachable peers: {rep.get('peers')}")


@pytest.fixture(scope="module")
def mesh() -> Iterator[Lab]:
    lab = Lab(prefix=unique_prefix(), hosts=3, topology="line")
    lab.up()
    try:
        # Before any router runs: one line that says how to start one.
        r = lab.exec(1, [*WEAVE, "top", "--once"], check=False)
        assert r.returncode == 3 and "weave-fdp launch" in r.stderr and r.stderr.count("\n") == 1, r
        lab.launch_routers([])
        wait_converged(lab, 1, 3)
        yield lab
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)


def test_top_once_shows_the_peers_and_routes(mesh: Lab) -> None:
    r = mesh.exec(1, ["env", "COLUMNS=120", *WEAVE, "top", "--once"])
    out = r.stdout
    assert "Peers and routes (3)" in out, out
    panel = out.split("Peers and routes (3)")[1].split("╰")[0]
    lines = {ln.strip("│ ").split()[0]: ln for ln in panel.splitlines() if ln.startswith("│h")}
    assert "self" in lines["h1"] and "direct" in lines["h2"] and "via h2" in lines["h3"], out
    assert "established" in out and "192.0.2.2" in out
    assert all(len(ln) <= 120 for ln in out.splitlines())


def test_top_json_and_flows_json_read_the_router(mesh: Lab) -> None:
    r = mesh.exec(2, [*WEAVE, "top", "--json", "--count", "2", "--interval", "0.3"])
    frames = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(frames) == 2 and frames[1]["counts"]["peers"] == 3
    assert frames[1]["counts"]["by_state"].get("established") == 2  # h2 sits in the middle of the line
    assert frames[1]["interval_s"] > 0 and frames[1]["error"] is None
    r = mesh.exec(2, [*WEAVE, "flows", "--json"])
    assert isinstance(json.loads(r.stdout), list)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_live_top_in_tmux_against_the_router(mesh: Lab, tmp_path: Path) -> None:
    sock = "wfdp-test-" + secrets.token_hex(4)
    rc = tmp_path / "rc"
    argv = ["ip", "netns", "exec", mesh.host_ns(1), *WEAVE, "top", "--interval", "0.5"]
    cmd = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(rc))}; sleep 30"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=10).stdout

    try:
        subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "top",
                        "-x", "100", "-y", "30", cmd], check=True, timeout=10)
        deadline = time.monotonic() + 15
        screen = ""
        while time.monotonic() < deadline and not ("via h2" in screen and "established" in screen):
            time.sleep(0.2)
            screen = tmux("capture-pane", "-p", "-t", "top")
        assert "via h2" in screen and "established" in screen, screen
        tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (rc.exists() and rc.read_text().strip()):
            time.sleep(0.1)
        assert rc.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=10)


SCRAPER = r"""
import sys, time, urllib.request
from weave_fdp.router.client import RouterClient
from weave_fdp.router.metrics import start_metrics_server
close = start_metrics_server("127.0.0.1:9109", lambda: RouterClient(timeout=5).call("report"))
try:
    print(urllib.request.urlopen("http://127.0.0.1:9109/metrics", timeout=5).read().decode())
finally:
    close()
"""


def test_metrics_endpoint_scraped_and_parsed(mesh: Lab) -> None:
    mesh.exec(1, ["ip", "link", "set", "lo", "up"])
    r = mesh.exec(1, [sys.executable, "-c", SCRAPER])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.stdout) for s in fam.samples}
    assert samples[("weave_fdp_up", ())] == 1
    assert samples[("weave_fdp_peers", (("reachable", "true"),))] == 3
    established = sum(v for (name, labels), v in samples.items()
                      if name == "weave_fdp_connections" and ("state", "established") in labels)
    assert established == 1
    assert samples[("weave_fdp_ipam_enabled", ())] in (0, 1)


# -- counter accuracy ------------------------------------------------------------------

PINGS, PAYLOAD = 7, 300
FRAME = PAYLOAD + 8 + 20 + 14  # ICMP header + IPv4 header + Ethernet header




@pytest.mark.parametrize("path", ["sleeve", "fastdp"])
def test_flow_counters_are_exact(path: str) -> None:
    lab = Lab(prefix=unique_prefix(), hosts=2, topology="full", containers=1)
    lab.up()
    try:
        src, dst = lab.container_ip(1, 1), lab.container_ip(2, 1)
        lab.launch_routers(["--no-fastdp"] if path == "sleeve" else [])
        wait_converged(lab, 1, 2)
        lab.attach_containers()
        deadline = time.monotonic() + 20
        conns: list[dict] = []
        while time.monotonic() < deadline:
            conns = report(lab, 1)["connections"]
            if {c.get("mode") for c in conns if c.get("state") == "established"} == {path}:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"h1's connection never settled on {path}: {conns}")
        r = lab.exec_container(1, 1, ["ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", "-s", str(PAYLOAD), dst],
                               check=False)
        assert r.returncode == 0, r.stdout
        deadline = time.monotonic() + 5
        got: list[dict] = []
        while time.monotonic() < deadline:
            flows = json.loads(lab.exec(1, [*WEAVE, "flows", "--json", "--proto", "icmp"]).stdout)
            got = [f for f in flows if f["src_ip"] == src and f["dst_ip"] == dst]
            if sum(f["packets"] or 0 for f in got) >= PINGS:
                break
            time.sleep(0.3)
        assert sum(f["packets"] for f in got) == PINGS, got
        assert sum(f["bytes"] for f in got) == PINGS * FRAME, got
        assert {f["path"] for f in got} == {path}, got
        check_top_op(lab, src, dst)
    finally:
        lab.down()
        assert not lab_namespaces(lab.prefix)


def top_op(lab: Lab, i: int, **args: object) -> dict:
    """The router API's ``top`` op, called from host ``i`` (what the dashboard asks each second)."""
    code = ("import json, sys; from weave_fdp.router.client import RouterClient; "
            "print(json.dumps(RouterClient().call('top', **json.loads(sys.argv[1]))))")
    return json.loads(lab.exec(i, [sys.executable, "-c", code, json.dumps(args)]).stdout)


def check_top_op(lab: Lab, src: str, dst: str) -> None:
    """``top`` sends every row first, then only the rows changed since its last answer."""
    def ours(ans: dict) -> list[dict]:
        return [f for f in ans["datapath"]["flows"] if f["src_ip"] == src and f["dst_ip"] == dst]

    full = top_op(lab, 1, since=None)
    assert ours(full) and full["datapath"]["flows_total"] == len(full["datapath"]["flows"]), full["datapath"]
    packets = sum(f["packets"] for f in ours(full))
    time.sleep(1.5)                               # the ping flow is idle now
    idle = top_op(lab, 1, since=full["as_of"] + 1.0, limit=0)
    assert ours(idle) == [], idle["datapath"]["flows"]
    assert idle["datapath"]["flows_total"] >= len(ours(full))
    lab.exec_container(1, 1, ["ping", "-c", "1", "-W", "2", "-s", str(PAYLOAD), dst])
    deadline = time.monotonic() + 5
    while True:
        changed = top_op(lab, 1, since=idle["as_of"], limit=0)
        if sum(f["packets"] for f in ours(changed)) > packets or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert sum(f["packets"] for f in ours(changed)) == packets + 1, changed["datapath"]["flows"]
