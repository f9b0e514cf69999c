"""Helpers for the sleeve's netns tests: a lab whose hosts run the standalone sleeve.

Each host gets bridge ``weave``, the sleeve port, containers wired with
``vethwepl<j>``/``ethwe``, and ``python -m weave_fdp.datapath.sleeve.run`` with a
static peer table (no router).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from weave_fdp.lab.lab import Lab
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import stop_process
from weave_fdp.plumbing.sleeve_port import ensure_sleeve_port


def peer_name(i: int) -> str:
    return f"7e:00:00:00:00:{i:02x}"


class SleeveLab:
    """A lab of ``hosts`` hosts with ``containers`` containers each, sleeve on every host."""

    def __init__(self, tmp: Path, hosts: int = 2, topology: str = "full", containers: int = 1,
                 container_mtu: int = 1376, password: str | dict[int, str] | None = None,
                 vnet: bool = True, big: bool | dict[int, bool] = True,
                 udp_gso: bool = True) -> None:
        self.prefix = "t" + secrets.token_hex(3)[:5]
        self.lab = Lab(self.prefix, hosts, topology)
        self.tmp = tmp
        self.ncont = containers
        self.container_mtu = container_mtu
        self.password = password
        self.vnet = vnet
        self.big = big
        self.udp_gso = udp_gso
        self.procs: dict[int, subprocess.Popen[Any]] = {}

    def up(self) -> "SleeveLab":
        self.lab.up()
        for i in range(1, self.lab.hosts + 1):
            ensure_sleeve_port(self.lab.host_ns(i))
            for _ in range(self.ncont):
                self.lab.add_container(i)
                j = self.lab.containers(i)
                cns = self.lab.container_ns(i, j)
                links.create_veth(f"vethwepl{j}", "ethwe", netns=self.lab.host_ns(i), peer_netns=cns,
                                  mtu=self.container_mtu)
                links.set_master(f"vethwepl{j}", "weave", self.lab.host_ns(i))
                links.add_address("ethwe", f"10.32.{i}.{j}/12", cns)
        for i in range(1, self.lab.hosts + 1):
            self.start(i)
        return self

    def config(self, i: int) -> dict[str, Any]:
        pw = self.password.get(i) if isinstance(self.password, dict) else self.password
        return {
            "local": peer_name(i), "ifname": "vethwe-pcap",
            "peers": {peer_name(k): self.lab.host_ip(k) for k in range(1, self.lab.hosts + 1)},
            "links": [[peer_name(a), peer_name(b)] for a, b in self.lab.links()],
            "password": pw, "status_file": str(self.tmp / f"status-h{i}.json"), "vnet": self.vnet,
            "big": self.big.get(i, True) if isinstance(self.big, dict) else self.big, "udp_gso": self.udp_gso,
        }

    def start(self, i: int) -> None:
        cfg = self.tmp / f"sleeve-h{i}.json"
        cfg.write_text(json.dumps(self.config(i)))
        log = open(self.tmp / f"sleeve-h{i}.log", "w")
        self.procs[i] = self.lab.popen(i, [sys.executable, "-m", "weave_fdp.datapath.sleeve.run", str(cfg)],
                                       stdout=log, stderr=subprocess.STDOUT)

    def stop(self, i: int) -> None:
        p = self.procs.pop(i, None)
        if p is not None:
            stop_process(p, 5)

    def status(self, i: int) -> dict[str, Any]:
        path = self.tmp / f"status-h{i}.json"
        deadline = time.monotonic() + 5
        while True:
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log(self, i: int) -> str:
        return (self.tmp / f"sleeve-h{i}.log").read_text()

    def wait_peers_up(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(p["up"] and p["pmtu_discovered"] for i in self.procs
                       for p in self.status(i)["peers"]):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError("sleeve peers not up: " + "; ".join(self.log(i)[-400:] for i in self.procs))

    def ping(self, i: int, j: int, dst: str, count: int = 3, size: int | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst]
        if size is not None:
            argv[1:1] = ["-s", str(size), "-M", "do"]
        return self.lab.exec_container(i, j, argv, check=check, timeout=30)

    def down(self) -> None:
        for i in list(self.procs):
            self.stop(i)
        self.lab.down()


def udp_payloads(pcap: bytes, port: int = 6783) -> list[tuple[str, bytes]]:
    """(source IP, UDP payload) of the IPv4/UDP packets to ``port`` in a classic pcap file."""
    import struct
    out = []
    off = 24
    while off + 16 <= len(pcap):
        incl = struct.unpack_from("<I", pcap, off + 8)[0]
        pkt = pcap[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 42 or pkt[12:14] != b"\x08\x00" or pkt[23] != 17:
            continue
        ihl = (pkt[14] & 15) * 4
        udp = 14 + ihl
        if struct.unpack_from("!H", pkt, udp + 2)[0] != port:
            continue
        out.append((".".join(map(str, pkt[26:30])), pkt[udp + 8:]))
    return out


class Capture:
    """tshark on a host's eth0 (UDP 6783) into a pcap file; ``stop()`` returns the bytes."""

    def __init__(self, sl: SleeveLab, i: int, name: str) -> None:
        self.path = sl.tmp / f"{name}.pcap"
        self.err = open(sl.tmp / f"{name}.tshark.log", "w+")
        self.proc = sl.lab.popen(i, ["tshark", "-q", "-i", "eth0", "-f", "udp port 6783", "-F", "pcap",
                                     "-w", str(self.path)], stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.err.seek(0)
            if "Capturing on" in self.err.read():
                return
            time.sleep(0.1)
        raise AssertionError("tshark did not start capturing")

    def stop(self) -> bytes:
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(10)
        return self.path.read_bytes()


# ---------------------------------------------------------------- benchmark (not a test)

def iperf(lab: Lab, server: tuple[int, int | None], client: tuple[int, int | None], dst: str,
          seconds: float = 3, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """One iperf3 TCP stream; (Gbit/s received, sender CPU %). ``(host, None)`` runs on the host."""
    run = lambda where, argv, **kw: (lab.popen(where[0], argv, **kw) if where[1] is None  # noqa: E731
                                     else lab.popen_container(where[0], where[1], argv, **kw))
    srv = run(server, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    argv = ["iperf3", "-c", dst, "-t", str(seconds), "-J", *extra]
    cli = run(client, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = cli.communicate(timeout=seconds + 30)
    srv.wait(10)
    res = json.loads(out)
    return (res["end"]["sum_received"]["bits_per_second"] / 1e9,
            res["end"]["cpu_utilization_percent"]["host_total"])


def bench(argv: list[str] | None = None) -> int:
    """Underlay, plain sleeve and encrypted sleeve, iperf3 1 stream, in the same run.

        python tests/netns/sleeve_helpers.py [--seconds 3] [--rounds 3] [--mtu 1450] [--json]
    """
    import argparse
    import statistics
    import tempfile
    ap = argparse.ArgumentParser(description=bench.__doc__)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mtu", type=int, default=1376, help="container MTU")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-big", action="store_true", help="no big datagrams (app-level fragments only)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sl = SleeveLab(Path(tmp), hosts=2, container_mtu=a.mtu, big=not a.no_big)
        try:
            sl.up()
            sl.wait_peers_up()
            res: dict[str, list[float]] = {"underlay": [], "plain": [], "encrypted": []}
            cpu: dict[str, list[float]] = {k: [] for k in res}
            for _ in range(a.rounds):
                for mode in ("underlay", "plain", "encrypted"):
                    if mode == "underlay":
                        g, c = iperf(sl.lab, (2, None), (1, None), sl.lab.host_ip(2), a.seconds)
                    else:
                        want = "s3cret" if mode == "encrypted" else None
                        if sl.password != want:
                            sl.password = want
                            for i in (1, 2):
                                sl.stop(i)
                            for i in (1, 2):
                                sl.start(i)
                            time.sleep(0.5)
                            sl.wait_peers_up()
                        g, c = iperf(sl.lab, (2, 1), (1, 1), "10.32.2.1", a.seconds)
                    res[mode].append(g)
                    cpu[mode].append(c)
            med = {k: statistics.median(v) for k, v in res.items()}
            out = {k: {"gbit_s": round(med[k], 3), "runs": [round(x, 3) for x in v],
                       "ratio": round(med[k] / med["underlay"], 3)} for k, v in res.items()}
            if a.json:
                print(json.dumps(out))
            else:
                for k, v in out.items():
                    print(f"{k:10s} {v['gbit_s']:7.3f} Gbit/s  {100 * v['ratio']:5.1f}% of underlay  runs={v['runs']}")
            for i in (1, 2):
                st = sl.status(i)
                print(f"h{i}: stats={st['stats']} drops={st['drops']}", file=sys.stderr)
        finally:
            sl.down()
    return 0


if __name__ == "__main__":
    sys.exit(bench())


def wait_for(fn, timeout: float = 5.0):
    """Poll ``fn`` every 0.2 s until it returns something true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.2)


def lab_factory(cls: type, tmp: Path):
    """Generator behind a fixture: yields ``make(**kw)`` that brings up a ``cls`` lab (peers up);
    every lab it made comes down afterwards."""
    labs: list = []

    def make(**kw: Any):
        sl = cls(tmp, **kw)
        labs.append(sl)
        sl.up()
        sl.wait_peers_up()
        return sl

    try:
        yield make
    finally:
        for sl in labs:
            sl.down()
