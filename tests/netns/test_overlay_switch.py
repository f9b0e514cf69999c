"""The overlay switch through real routers: mixed hosts, failover and return, relays, encryption.

- 3 hosts, h3 ``--no-fastdp``: h1-h2 fastdp, the rest sleeve with the reason on each
  side, every container reaches every other, iperf3 through the sleeve, a broadcast
  and a multicast ping reach each container exactly once.
- UDP 6784 blocked between h1 and h2 while a 20 ms ping runs: sleeve with
  ``fastdp heartbeats lost`` within 3 s; unblocked: fastdp again within 15 s; both
  changes in the router log and in ``status``; times and loss printed.
- a line h1-h2-h3 with h3 ``--no-fastdp``: h1's container reaches h3's through h2.
- ``--password``: sleeve with ``encryption: kernel lacks ESP``; with
  ``--trusted-subnets`` on both ends: plain fastdp.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from weave_fdp.lab.lab import Lab, weave_command
from weave_fdp.plumbing import links

pytestmark = pytest.mark.timeout(150)

PING_INTERVAL = 0.02   # s: "a ping every 10-20 ms"


# ---------------------------------------------------------------- helpers
def launch(lab: Lab, args: dict[int, list[str]]) -> None:
    """``weave-fdp launch`` on every host with per-host extra arguments (lab.launch_routers
    gives every host the same ones); teardown resets the routers."""
    lab.state.routers = lab.routers = True
    lab._save()
    for i in range(1, lab.hosts + 1):
        argv = [*weave_command(), "launch", "--nickname", f"h{i}",
                *[lab.host_ip(n) for n in lab.neighbours(i)], *args.get(i, [])]
        lab._run_logged(lab.host_ns(i), argv, f"h{i}-launch", 30)


def add_container(lab: Lab, i: int, fastdp: bool) -> None:
    """One container on host i: attached by the router (fastdp) or wired to the bridge (sleeve only)."""
    lab.add_container(i)
    j = lab.containers(i)
    cns = lab.container_ns(i, j)
    if fastdp:
        lab.exec(i, [*weave_command(), "attach", lab.container_cidr(i, j), f"netns:{cns}"])
    else:
        links.create_bridge("weave", netns=lab.host_ns(i))
        links.create_veth(f"vethwepl{j}", "ethwe", netns=lab.host_ns(i), peer_netns=cns, mtu=1376)
        links.set_master(f"vethwepl{j}", "weave", lab.host_ns(i))
        links.add_address("ethwe", lab.container_cidr(i, j), cns)
        lab.exec_container(i, j, ["ip", "route", "add", "224.0.0.0/4", "dev", "ethwe"])
    # answer broadcast/multicast pings: the duplicate check counts the replies
    lab.exec_container(i, j, ["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"])


def connections(lab: Lab, i: int) -> list[dict[str, Any]]:
    out = lab.exec(i, [*weave_command(), "status", "connections", "--json"], check=False).stdout
    try:
        return [c for c in json.loads(out) if c.get("state") == "established"]
    except ValueError:
        return []


def mode(lab: Lab, i: int, j: int) -> tuple[str | None, str | None]:
    """(mode, reason) of host i's connection to host j."""
    for c in connections(lab, i):
        if c.get("nickname") == f"h{j}":
            return c.get("mode"), c.get("mode_reason")
    return None, None


def wait_mode(lab: Lab, i: int, j: int, want: str, timeout: float, reason: str | None = "any") -> float:
    t0 = time.monotonic()
    got: tuple[str | None, str | None] = (None, None)
    while time.monotonic() - t0 < timeout:
        got = mode(lab, i, j)
        if got[0] == want and (reason == "any" or got[1] == reason):
            return time.monotonic() - t0
        time.sleep(0.1)
    logs = "\n".join(f"--- h{k}\n" + "\n".join(router_log(lab, k).splitlines()[-12:]) for k in (i, j))
    pytest.fail(f"h{i} -> h{j}: not {want} ({reason}) within {timeout} s; now {got}\n{logs}")


def switch_history(lab: Lab, i: int, j: int) -> list[dict[str, Any]]:
    rep = json.loads(lab.exec(i, [*weave_command(), "report"]).stdout)
    peer = next(c["peer"] for c in connections(lab, i) if c.get("nickname") == f"h{j}")
    return rep["switch"][peer]["history"]


def router_log(lab: Lab, i: int) -> str:
    try:
        return Path(f"/run/weave-fdp/{lab.host_ns(i)}/router.log").read_text()
    except OSError:
        return ""


def ping_ok(lab: Lab, src: tuple[int, int], dst: tuple[int, int], count: int = 2) -> bool:
    r = lab.exec_container(*src, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", lab.container_ip(*dst)],
                           check=False)
    return r.returncode == 0


def group_ping_replies(lab: Lab, src: tuple[int, int], group: str, count: int = 3) -> dict[str, list[int]]:
    """Ping a broadcast/multicast group; source address -> icmp_seq of every reply."""
    r = lab.exec_container(*src, ["ping", "-b", "-c", str(count), "-i", "0.3", "-w", str(count + 1), group],
                           check=False)
    replies: dict[str, list[int]] = {}
    for m in re.finditer(r"from ([\d.]+): icmp_seq=(\d+)", r.stdout):
        replies.setdefault(m.group(1), []).append(int(m.group(2)))
    return replies


def mixed_lab(make_lab, topology: str):
    """Three hosts, h3 ``--no-fastdp``, one attached container each."""
    lab = make_lab(hosts=3, topology=topology)
    launch(lab, {3: ["--no-fastdp"]})
    for i in (1, 2, 3):
        add_container(lab, i, fastdp=i != 3)
    return lab


# ---------------------------------------------------------------- mixed hosts + failover
def test_mixed_hosts_then_failover_and_return(make_lab) -> None:
    lab = mixed_lab(make_lab, "full")

    # (1) modes and reasons on both sides of every connection
    wait_mode(lab, 1, 2, "fastdp", 20)
    wait_mode(lab, 2, 1, "fastdp", 10)
    for i in (1, 2):
        wait_mode(lab, i, 3, "sleeve", 10, "peer has no fastdp")
        wait_mode(lab, 3, i, "sleeve", 10, "fastdp not running on this host")
    # what an operator reads: the mode and, for sleeve, why
    text = lab.exec(1, [*weave_command(), "status", "connections"]).stdout
    assert re.search(r"established fastdp \S+\(h2\) mtu=\d+$", text, re.M), text
    assert re.search(r"established sleeve \S+\(h3\) mtu=\d+ \(peer has no fastdp\)$", text, re.M), text
    # fastdp's containers keep the kernel's GSO limit (the sleeve's smaller one costs fastdp throughput)
    assert links.get_gso_max_size("ethwe", lab.container_ns(1, 1)) == 65536
    # full reachability, container to container
    for a in (1, 2, 3):
        for b in (1, 2, 3):
            if a != b:
                assert ping_ok(lab, (a, 1), (b, 1)), f"c{a} cannot reach c{b}"
    # a broadcast and a multicast reach each container once (mixed mode, no duplicates)
    others = {1: {lab.container_ip(2, 1), lab.container_ip(3, 1)},
              3: {lab.container_ip(1, 1), lab.container_ip(2, 1)}}
    for src, want in others.items():
        for group in ("10.47.255.255", "224.0.0.1"):
            replies = group_ping_replies(lab, (src, 1), group)
            got = {ip: seqs for ip, seqs in replies.items() if ip in want}
            assert set(got) == want, f"c{src} -> {group}: replies from {sorted(replies)}"
            for ip, seqs in got.items():
                assert len(seqs) == len(set(seqs)), f"c{src} -> {group}: duplicates from {ip}: {seqs}"
    # iperf3 through the sleeve (h1 -> h3)
    srv = lab.popen_container(3, 1, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = lab.exec_container(1, 1, ["iperf3", "-c", lab.container_ip(3, 1), "-t", "2", "-J"], timeout=20)
        bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait()
    print(f"\niperf3 c1 -> c3 through the sleeve: {bps / 1e6:.0f} Mbit/s")
    assert bps > 1e6
    assert mode(lab, 1, 3) == ("sleeve", "peer has no fastdp")

    # (2) block UDP 6784 between h1 and h2 while a ping runs every 20 ms
    wait_mode(lab, 1, 2, "fastdp", 10)
    wait_mode(lab, 2, 1, "fastdp", 10)
    ping = lab.popen_container(1, 1, ["ping", "-D", "-i", str(PING_INTERVAL), "-W", "1", lab.container_ip(2, 1)],
                               stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        t_block = time.time()
        lab.block_udp_port(1, 2, 6784)
        wait_mode(lab, 1, 2, "sleeve", 3.0, "fastdp heartbeats lost")
        wait_mode(lab, 2, 1, "sleeve", 3.0, "fastdp heartbeats lost")
        time.sleep(1.5)
        t_unblock = time.time()
        lab.unblock_udp_port(1, 2, 6784)
        wait_mode(lab, 1, 2, "fastdp", 15.0)
        wait_mode(lab, 2, 1, "fastdp", 15.0)
        time.sleep(1.0)
    finally:
        ping.send_signal(2)
        out = ping.communicate(timeout=5)[0]
    fail, back = _transition_times(lab, t_block, t_unblock)
    lost_fail, lost_back, dups, sent = _ping_loss(out, t_unblock)
    print(f"failover {fail:.2f} s (h1, h2 switch decision after the block), "
          f"return {back:.2f} s; ping every {PING_INTERVAL * 1000:.0f} ms: {sent} sent, "
          f"lost {lost_fail} during failover, {lost_back} during return, {dups} duplicates")
    assert fail < 3.0 and back < 15.0
    assert dups == 0
    assert lost_back <= 5, out[-500:]
    # both transitions in the router log
    for i, j in ((1, 2), (2, 1)):
        log = router_log(lab, i)
        assert "fastdp -> sleeve (fastdp heartbeats lost)" in log, log[-1500:]
        assert re.search(r"-> fastdp after", log), log[-1500:]
    assert ping_ok(lab, (1, 1), (3, 1)) and ping_ok(lab, (3, 1), (2, 1))


def _transition_times(lab: Lab, t_block: float, t_unblock: float) -> tuple[float, float]:
    """Worst of h1's and h2's switch decisions, from the histories in their reports."""
    fail = back = 0.0
    for i, j in ((1, 2), (2, 1)):
        hist = switch_history(lab, i, j)
        down = [h for h in hist if h["to"] == "sleeve" and h["reason"] == "fastdp heartbeats lost"
                and h["at"] >= t_block]
        up = [h for h in hist if h["to"] == "fastdp" and h["at"] >= t_unblock]
        assert down and up, hist
        fail = max(fail, down[0]["at"] - t_block)
        back = max(back, up[0]["at"] - t_unblock)
    return fail, back


def _ping_loss(out: str, t_unblock: float) -> tuple[int, int, int, int]:
    """(lost before the unblock, lost after it, duplicate replies, sent) from ``ping -D`` output."""
    seen: dict[int, float] = {}
    dups = 0
    for m in re.finditer(r"\[([\d.]+)\] .*icmp_seq=(\d+)", out):
        seq = int(m.group(2))
        if seq in seen:
            dups += 1
        seen.setdefault(seq, float(m.group(1)))
    m = re.search(r"(\d+) packets transmitted", out)
    sent = int(m.group(1)) if m else max(seen, default=0)
    lost_fail = lost_back = 0
    for seq in range(1, sent + 1):
        if seq in seen:
            continue
        before = max((t for s, t in seen.items() if s < seq), default=0.0)
        if before < t_unblock:
            lost_fail += 1
        else:
            lost_back += 1
    return lost_fail, lost_back, dups, sent


# ---------------------------------------------------------------- relay across overlays
def test_line_fastdp_then_sleeve_relays_across_overlays(make_lab) -> None:
    lab = mixed_lab(make_lab, "line")
    wait_mode(lab, 1, 2, "fastdp", 20)
    wait_mode(lab, 2, 3, "sleeve", 10, "peer has no fastdp")
    # h1's container speaks first: its ARP broadcast must cross h2 into the sleeve
    assert ping_ok(lab, (1, 1), (3, 1), count=3), router_log(lab, 2)[-1500:]
    assert ping_ok(lab, (3, 1), (1, 1))
    assert ping_ok(lab, (1, 1), (2, 1))
    replies = group_ping_replies(lab, (1, 1), "10.47.255.255")
    assert set(replies) >= {lab.container_ip(2, 1), lab.container_ip(3, 1)}, replies
    assert all(len(s) == len(set(s)) for s in replies.values()), replies
    assert mode(lab, 1, 2)[0] == "fastdp"


# ---------------------------------------------------------------- encryption
def test_password_uses_sleeve_unless_trusted(make_lab) -> None:
    lab = make_lab(hosts=3, topology="full")
    # h1 and h2 trust the whole underlay, h3 trusts no one: h1-h2 is plain fastdp, while
    # h1-h3 and h2-h3 stay encrypted (plain fastdp needs both ends to trust each other)
    trusted = ["--trusted-subnets", "192.0.2.0/24"]
    launch(lab, {1: ["--password", "pw", *trusted], 2: ["--password", "pw", *trusted], 3: ["--password", "pw"]})
    for i in (1, 2, 3):
        add_container(lab, i, fastdp=True)
    wait_mode(lab, 1, 2, "fastdp", 20)
    wait_mode(lab, 2, 1, "fastdp", 10)
    for i in (1, 2):
        wait_mode(lab, i, 3, "sleeve", 10, "encryption: kernel lacks ESP")
        wait_mode(lab, 3, i, "sleeve", 10, "encryption: kernel lacks ESP")
    for a, b in ((1, 2), (1, 3), (3, 2)):
        assert ping_ok(lab, (a, 1), (b, 1)), f"c{a} cannot reach c{b}"
    # Weave's words: the trusted pair's fastdp is unencrypted, the others ride the sealed sleeve
    text = lab.exec(1, [*weave_command(), "status", "connections"]).stdout
    assert re.search(r"established unencrypted fastdp \S+\(h2\) mtu=\d+$", text, re.M), text
    assert re.search(r"established encrypted sleeve \S+\(h3\) mtu=\d+ \(encryption: kernel lacks ESP\)$",
                     text, re.M), text
    # no ESP here: nothing of ours in the xfrm tables
    for i in (1, 2, 3):
        xf = lab.exec(i, ["ip", "xfrm", "policy", "list"]).stdout + lab.exec(i, ["ip", "xfrm", "state", "list"]).stdout
        assert "6784" not in xf and "reqid 22525" not in xf, xf
    # h1 <-> h3 traffic went through the sleeve, sealed
    rep = json.loads(lab.exec(3, [*weave_command(), "report"]).stdout)
    peers = rep["overlays"]["sleeve"]["peers"]
    assert peers and all(p["encrypted"] for p in peers), peers
    assert sum(p["rx_pkts"] for p in peers) > 0
