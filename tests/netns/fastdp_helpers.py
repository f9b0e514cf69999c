"""Helpers for fastdp netns tests: a lab whose hosts run fastdp with a static plan (no router)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import deque
from collections.abc import Callable

from weave_fdp.datapath.fastdp.host import HostDatapath, MeshInputs
from weave_fdp.lab.lab import Lab


def name(i: int) -> str:
    return f"h{i}"


def _bfs(adj: dict[int, list[int]], src: int) -> dict[int, int]:
    """parent of every node on the BFS tree rooted at src."""
    parent = {src: src}
    q = deque([src])
    while q:
        u = q.popleft()
        for v in sorted(adj[u]):
            if v not in parent:
                parent[v] = u
                q.append(v)
    return parent


def mesh_for(lab: Lab, i: int, modes: dict[int, str] | None = None) -> MeshInputs:
    """Routes and broadcast trees for host i from the lab's topology (what the mesh would compute)."""
    n = lab.hosts
    adj = {h: lab.neighbours(h) for h in range(1, n + 1)}
    tree_from_me = _bfs(adj, i)
    unicast = {}
    for dest in range(1, n + 1):
        if dest == i or dest not in tree_from_me:
            continue
        hop = dest
        while tree_from_me[hop] != i:
            hop = tree_from_me[hop]
        unicast[name(dest)] = name(hop)
    broadcast = {}
    for src in range(1, n + 1):
        parent = _bfs(adj, src)
        broadcast[name(src)] = [name(c) for c, p in parent.items() if p == i and c != i]
    return MeshInputs(local=name(i), short_ids={name(h): h for h in range(1, n + 1)}, unicast=unicast,
                      broadcast=broadcast, hop_ips={name(h): lab.host_ip(h) for h in adj[i]},
                      modes={name(h): (modes or {}).get(h, "fastdp") for h in adj[i]})


class FastdpLab:
    """Every host of ``lab`` runs fastdp; ``containers`` containers each, attached."""

    def __init__(self, lab: Lab, containers: int = 1, direct: bool | None = None) -> None:
        self.lab = lab
        self.hosts: dict[int, HostDatapath] = {}
        for i in range(1, lab.hosts + 1):
            hd = HostDatapath(netns=lab.host_ns(i), underlay_ifname="eth0", direct=direct)
            hd.start()
            hd.set_mesh(mesh_for(lab, i))
            self.hosts[i] = hd
            for _ in range(containers):
                self.add_container(i)

    def add_container(self, i: int, cidr: str | None = None) -> int:
        self.lab.add_container(i)
        j = self.lab.containers(i)
        self.hosts[i].attach(f"/run/netns/{self.lab.container_ns(i, j)}",
                             [cidr or self.lab.container_cidr(i, j)])
        return j

    def close(self) -> None:
        for hd in self.hosts.values():
            hd.stop()

    def iperf3(self, src: tuple[int, int], dst: tuple[int, int], *args: str) -> dict:
        """A 1 s iperf3 run from container ``src`` to container ``dst`` (``args``: e.g. "-u",
        "-b", "50M"); the client's JSON report. The one-shot server is reaped afterwards."""
        srv = self.lab.popen_container(*dst, ["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            cp = self.lab.exec_container(*src, ["iperf3", *args, "-c", self.lab.container_ip(*dst), "-t", "1",
                                                "-J"], timeout=20)
            return json.loads(cp.stdout)
        finally:
            srv.wait(timeout=10)

    def ping(self, src: tuple[int, int], dst_ip: str, count: int = 3, interval: float = 0.2,
             extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.exec_container(*src, ["ping", "-c", str(count), "-i", str(interval), "-W", "2",
                                              *(extra or []), dst_ip], check=False)


def vxlan_fields(lab: Lab, i: int, fields: list[str], during: Callable[[], object],
                 start_timeout: float = 30, display: str = "icmp") -> list[list[str]]:
    """tshark on host ``i``'s eth0 decoding UDP 6784 as VXLAN: the ``fields`` of every
    packet matching the ``display`` filter (default ICMP) seen while ``during()`` runs.
    Waits until tshark really captures (it starts slowly on a loaded machine), so
    nothing ``during`` sends is missed."""
    import signal
    import tempfile

    argv = ["tshark", "-i", "eth0", "-n", "-l", "-d", "udp.port==6784,vxlan", "-Y", display,
            "-f", "udp port 6784", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    with tempfile.TemporaryFile("w+") as err:
        cap = lab.popen(i, argv, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.monotonic() + start_timeout
        while True:
            err.seek(0)
            if "Capturing on" in err.read():
                break
            if cap.poll() is not None or time.monotonic() > deadline:
                cap.kill()
                raise AssertionError("tshark did not start capturing")
            time.sleep(0.1)
        try:
            during()
            time.sleep(0.5)   # the last replies are on the wire
        finally:
            cap.send_signal(signal.SIGINT)
        out = cap.communicate(timeout=30)[0]
    return [line.split("|") for line in out.strip().splitlines() if line]
