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


def flows(lab, i: int) -> list[dict]:
    """`weave-fdp flows --json` on host i (the dashboard's command, reading the router's report)."""
    out = lab.exec(i, [*weave_command(), "flows", "--json"], check=False).stdout
    try:
        return json.loads(out)
    except ValueError:
        return []


def icmp_flow(lab, i: int, src: str, dst: str) -> dict | None:
    """The ICMP flow src -> dst on host i (echo requests and replies share the ICMP key)."""
    rows = [f for f in flows(lab, i) if f.get("src_ip") == src and f.get("dst_ip") == dst
            and str(f.get("proto")) in ("icmp", "1")]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def test_router_sleeve_flow_counters_are_exact(make_lab) -> None:
    """N pings of S bytes: exactly N frames and N x (S + 42) frame bytes on that flow, both hosts."""
    lab = make_lab(hosts=2)
    for i in (1, 2):
        wire_container(lab, i)
    lab.launch_routers(["--no-fastdp"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = lab.exec_container(1, 1, ["ping", "-c", "1", "-W", "1", "10.32.2.1"], check=False)
        if r.returncode == 0:
            break
    else:
        pytest.fail(f"no sleeve connectivity: {connections(lab, 1)}")
    c1, c2 = "10.32.1.1", "10.32.2.1"
    wait = time.monotonic() + 5
    while (icmp_flow(lab, 1, c1, c2) is None or icmp_flow(lab, 2, c1, c2) is None) and time.monotonic() < wait:
        time.sleep(0.2)
    before = {(i, s, d): icmp_flow(lab, i, s, d) for i in (1, 2) for s, d in ((c1, c2), (c2, c1))}
    assert all(before.values()), before
    assert before[(1, c1, c2)]["path"] == "sleeve" and before[(1, c1, c2)]["via_nickname"] == "h2"

    n, size = 7, 300
    frame = size + 8 + 20 + 14           # ICMP payload + ICMP + IPv4 + Ethernet headers
    lab.exec_container(1, 1, ["ping", "-c", str(n), "-i", "0.05", "-s", str(size), "-W", "2", c2])
    # Requests c1 -> c2 leave h1 and arrive at h2; replies c2 -> c1 the other way round.
    for key, row in before.items():
        deadline = time.monotonic() + 3
        while True:
            now = icmp_flow(lab, *key)
            got = (now["packets"] - row["packets"], now["bytes"] - row["bytes"])
            if got == (n, n * frame) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == (n, n * frame), f"flow {key}: {got} != {(n, n * frame)}"
    rep = json.loads(lab.exec(1, [*weave_command(), "report"]).stdout)
    peers = [p for p in rep["datapath"]["peers"] if p.get("path") == "sleeve"]
    assert len(peers) == 1 and peers[0]["tx_packets"] >= n + 1 and peers[0]["rx_packets"] >= n + 1, peers


def test_sleeve_port_removed_under_the_router_comes_back(make_lab) -> None:
    """The sleeve's bridge port deleted: made again, the capture socket reopened, traffic back."""
    lab = make_lab(hosts=2)
    for i in (1, 2):
        wire_container(lab, i)
    lab.launch_routers(["--no-fastdp"])
    ping = ["ping", "-c", "1", "-W", "1", "10.32.2.1"]
    deadline = time.monotonic() + 20
    while lab.exec_container(1, 1, ping, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"no sleeve connectivity: {connections(lab, 1)}"
    lab.exec(1, ["ip", "link", "del", "vethwe-bridge"])
    deadline = time.monotonic() + 10
    while True:
        rep = json.loads(lab.exec(1, [*weave_command(), "report"]).stdout)
        if rep["overlays"]["sleeve"]["port_repairs"] >= 1:
            break
        assert time.monotonic() < deadline, "sleeve port not repaired"
        time.sleep(0.2)
    links = lab.exec(1, ["ip", "-o", "link", "show", "master", "weave"]).stdout
    assert "vethwe-bridge" in links
    deadline = time.monotonic() + 10
    while lab.exec_container(1, 1, ping, check=False).returncode != 0:
        assert time.monotonic() < deadline, "no traffic after the repair"


@pytest.mark.skipif(not links.big_tcp_supported(), reason="this kernel has no IPv4 BIG TCP (6.3+)")
def test_sleeve_only_routers_carry_super_frames_over_64k_whole(make_lab) -> None:
    """Routers without fastdp on a kernel with BIG TCP: `attach` gives containers IPv4
    super-frames of four trains, heartbeats say FEATURE_BIG, and a bulk TCP stream crosses
    in frames over 64 KiB, every byte intact."""
    import hashlib
    import subprocess
    import sys

    from weave_fdp.datapath.sleeve.sizing import big_super_frame

    lab = make_lab(hosts=2)
    lab.launch_routers(["--no-fastdp"])
    for i in (1, 2):
        lab.add_container(i)
        lab.exec(i, [*weave_command(), "attach", f"10.32.{i}.1/12", f"netns:{lab.container_ns(i, 1)}"])
    assert links.get_gso_ipv4_max_size("ethwe", lab.container_ns(1, 1)) == big_super_frame(lab.mtu)
    deadline = time.monotonic() + 20
    while lab.exec_container(1, 1, ["ping", "-c", "1", "-W", "1", "10.32.2.1"], check=False).returncode:
        assert time.monotonic() < deadline, f"no sleeve connectivity: {connections(lab, 1)}"
    data = hashlib.sha256(b"weave-fdp big frames").digest() * (1 << 19)          # 16 MiB
    srv = lab.popen_container(2, 1, [sys.executable, "-c",
                                     "import hashlib,socket\ns=socket.socket();s.bind(('0.0.0.0',5001));s.listen(1)\n"
                                     "c,_=s.accept();h=hashlib.sha256()\n"
                                     "while (d:=c.recv(1<<18)):\n h.update(d)\nprint(h.hexdigest())\n"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    lab.exec_container(1, 1, [sys.executable, "-c",
                              "import hashlib,socket\nc=socket.create_connection(('10.32.2.1',5001))\n"
                              "c.sendall(hashlib.sha256(b'weave-fdp big frames').digest()*(1<<19));c.close()\n"],
                       timeout=60)
    out, _ = srv.communicate(timeout=30)
    assert out.strip() == hashlib.sha256(data).hexdigest()
    rep = json.loads(lab.exec(1, [*weave_command(), "report"]).stdout)
    sl = rep["overlays"]["sleeve"]
    assert sl["big_frames"] and all(p["takes_big_frames"] for p in sl["peers"]), sl
    assert sl["stats"]["big_tx"] > 0 and sl["stats"]["cut_big"] == 0, sl["stats"]
