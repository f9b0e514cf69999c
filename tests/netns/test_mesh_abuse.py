"""Attacks on TCP 6783 from a lab host that is not in the mesh: the router's memory stays bounded,
a genuine peer still joins, and failures show as one row per source (docs/SECURITY.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.test_fastdp_router import cli, router_pid
from tests.netns.test_router_rss import proc_status

pytestmark = pytest.mark.timeout(150)

ATTACK = str(Path(__file__).with_name("mesh_attack.py"))
LIGHT = ("--no-fastdp", "--no-dns")   # the control plane is under test: no BPF compile


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _connections(lab, i: int) -> list[dict]:
    cp = cli(lab, i, "status", "connections", "--json", check=False)
    try:
        return json.loads(cp.stdout)
    except ValueError:
        return []


def test_fake_peers_announcing_largest_frames_do_not_grow_memory(make_lab) -> None:
    lab = make_lab(hosts=2, topology="full")
    cli(lab, 1, "launch", "--nickname", "h1", *LIGHT)
    pid = router_pid(lab, 1)
    # 30 fake peers, each from its own address (so per-source limits do not stop them:
    # this is the bound on the total)
    sources = [f"192.0.2.{100 + k}" for k in range(30)]
    for s in sources:
        lab.exec(2, ["ip", "addr", "add", f"{s}/24", "dev", "eth0"])
    time.sleep(1.0)
    base = max(proc_status(pid)["VmRSS"] for _ in range(3))
    attack = lab.popen(2, [sys.executable, ATTACK, "big-frames", lab.host_ip(1), *sources],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = attack.stdout.readline()
        assert line.startswith("handshaken 30"), line + attack.stdout.read(2000) if attack.poll() is not None else line
        # 30 x 8 MiB announced and sent; the router reads frames for 7 s before giving up on them
        peak, until = base, time.monotonic() + 6.0
        while time.monotonic() < until:
            peak = max(peak, proc_status(pid)["VmRSS"])
            time.sleep(0.1)
    finally:
        attack.kill()
        attack.wait(10)
    grown_mb = (peak - base) / 1024
    print(f"router RSS {base / 1024:.0f} MB before, peak {peak / 1024:.0f} MB under attack (+{grown_mb:.0f} MB)")
    assert grown_mb < 56, f"router grew by {grown_mb:.0f} MB under 30 x 8 MiB announced frames"
    inbound = json.loads(cli(lab, 1, "report").stdout)["router"]["inbound"]
    print(f"rx budget {inbound['rx_budget']}")
    assert inbound["rx_budget"]["peak"] <= inbound["rx_budget"]["total"]
    assert inbound["rx_budget"]["waits"] > 0, "the budget should have made some frames wait"
    # and it still answers and serves
    assert cli(lab, 1, "status").returncode == 0


def test_silent_connections_from_one_host_do_not_starve_a_genuine_peer(make_lab) -> None:
    lab = make_lab(hosts=3, topology="full")
    cli(lab, 1, "launch", "--nickname", "h1", *LIGHT)
    attack = lab.popen(3, [sys.executable, ATTACK, "silent", lab.host_ip(1), "64", "40"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the attack holds every slot it can get before the genuine peers arrive
        assert attack.stdout.readline().startswith("holding")
        out = lab.exec(2, [sys.executable, ATTACK, "handshakes", lab.host_ip(1), "10"], timeout=60).stdout
        answered = int(out.split()[1])
        assert answered >= 9, f"genuine handshakes under attack: {out.strip()}"
        started = time.monotonic()
        cli(lab, 2, "launch", "--nickname", "h2", lab.host_ip(1), *LIGHT)
        _wait(lambda: any(c["state"] == "established" for c in _connections(lab, 2)), 20,
              "h2 to join h1 while h3 holds 64 silent connections")
        joined_s = time.monotonic() - started
        # the attacker's failures: one aggregated row for its address, however many attempts
        rows = _wait(lambda: [c for c in _connections(lab, 1) if c["state"] == "failed"]
                     if sum(c.get("attempts", 0) for c in _connections(lab, 1)) >= 2 else None, 20,
                     "h3's silent connections to time out")
    finally:
        attack.kill()
        attack.wait(10)
    print(f"{answered} of 10 genuine handshakes answered; h2 joined {joined_s:.1f} s after launch "
          f"under attack; failure rows on h1: {rows}")
    assert [r["address"] for r in rows] == [lab.host_ip(3)], rows
    assert rows[0]["attempts"] >= 2 and "failed attempts since" in rows[0]["info"], rows
    assert "no complete handshake within 5 s" in rows[0]["info"]


def test_damaged_state_files_are_recovered_or_stop_launch(make_lab) -> None:
    lab = make_lab(hosts=1, topology="full")
    lab.add_container(1)
    name = cli(lab, 1, "launch", "--nickname", "h1", *LIGHT).stdout.strip()
    ns = f"netns:{lab.container_ns(1, 1)}"
    cli(lab, 1, "attach", lab.container_cidr(1, 1), ns)
    state = Path(json.loads(cli(lab, 1, "report").stdout)["router"]["state_dir"])
    cli(lab, 1, "stop")
    # 1. truncated container records: rebuilt from the kernel, and said so
    records = state / "fastdp-containers.json"
    records.write_bytes(records.read_bytes()[:20])
    (state / "fastdp-containers.json.prev").unlink()
    cp = cli(lab, 1, "launch", "--nickname", "h1", *LIGHT)
    assert cp.stdout.strip() == name
    assert "warning: container records file" in cp.stderr \
        and "recovered from the container links the kernel shows (1 of 1 rebuilt)" in cp.stderr, cp.stderr
    ps = json.loads(cli(lab, 1, "ps", "--json").stdout)
    assert [(p["container"], p["cidrs"]) for p in ps] == [(ns, [lab.container_cidr(1, 1)])]
    cli(lab, 1, "stop")
    # 2. damaged identity with its copy: the same name, and said so
    (state / "peer.json").write_text("{\"name\": \"7e:")
    cp = cli(lab, 1, "launch", "--nickname", "h1", *LIGHT)
    assert cp.stdout.strip() == name and "warning: peer identity file" in cp.stderr, cp.stderr
    cli(lab, 1, "stop")
    # 3. damaged identity and no good copy: launch stops, naming the file and the fix
    (state / "peer.json").write_text("")
    (state / "peer.json.prev").write_text("garbage")
    cp = cli(lab, 1, "launch", "--nickname", "h1", *LIGHT, check=False)
    assert cp.returncode == 1 and f"peer identity file {state / 'peer.json'} is damaged" in cp.stderr, cp.stderr
    assert "--name" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    # the fix it names works: --name keeps the identity
    assert cli(lab, 1, "launch", "--name", name, *LIGHT).stdout.strip() == name
