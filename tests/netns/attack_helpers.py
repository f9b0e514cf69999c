"""Attacks on the data plane from the lab underlay or from a container, with bytes built by hand.

A *stranger* is one more namespace on the lab's underlay bridge (``<prefix>-h<n>``,
192.0.2.<n>, no router, not in the mesh) whose port may reach every host. Frames
are built with struct (no scapy) and sent with a UDP socket, or with a raw socket
(IP_HDRINCL) when the outer source address must be forged. A *listener* is a UDP
socket in a container that counts what reaches it.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from weave_fdp.datapath.fastdp import abi
from weave_fdp.lab import underlay
from weave_fdp.lab.lab import weave_command

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0x4000, ttl, proto, 0,
                                socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", hdr, 10, csum(bytes(hdr)))
    return bytes(hdr) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload   # checksum 0: none (IPv4)


def eth(dst: str, src: str, ethertype: int) -> bytes:
    return abi.mac_bytes(dst) + abi.mac_bytes(src) + struct.pack("!H", ethertype)


def udp_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, dport: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame as a container would send it."""
    return eth(dst_mac, src_mac, ETH_P_IP) + ipv4(src_ip, dst_ip, 17, udp(40000, dport, payload))


def arp(op: int, sha: str, spa: str, tha: str, tpa: str, *, dst: str = "ff:ff:ff:ff:ff:ff",
        src: str | None = None) -> bytes:
    """An ARP frame (op 1 request, 2 reply); ``src``: the Ethernet source (default ``sha``)."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, abi.mac_bytes(sha), socket.inet_aton(spa),
                       abi.mac_bytes(tha), socket.inet_aton(tpa))
    return eth(dst, src or sha, ETH_P_ARP) + body


def vxlan(vni: int, frame: bytes) -> bytes:
    """RFC 7348 header (I flag) and the inner frame: a UDP 6784 payload."""
    return struct.pack("!II", 0x08000000, vni << 8) + frame


# ------------------------------------------------------------------ the stranger

class Stranger:
    """Namespace ``<prefix>-h<n>`` at 192.0.2.<n> on the lab underlay; removed by ``close``
    (and by the lab's tear-down, which removes every ``<prefix>-h*`` namespace)."""

    def __init__(self, lab: Any, n: int = 66) -> None:
        self.lab, self.n = lab, n
        self.ns = f"{lab.prefix}-h{n}"
        self.ip = f"192.0.2.{n}"
        port = underlay.port_name(n)
        run(["ip", "netns", "add", self.ns])
        try:
            run(["ip", "-n", self.ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                 "netns", lab.ul_ns])
            run(["ip", "-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", "eth0"])
            run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
            run(["ip", "-n", self.ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", lab.ul_ns, "link", "set", port, "master", underlay.BRIDGE, "up"])
            pairs = ", ".join(f'"{port}" . "{underlay.port_name(i)}", "{underlay.port_name(i)}" . "{port}"'
                              for i in range(1, lab.hosts + 1))
            run(["ip", "netns", "exec", lab.ul_ns, "nft",
                 f"add element {underlay.FAMILY} {underlay.TABLE} links {{ {pairs} }}"])
        except BaseException:
            self.close()
            raise

    def send_udp(self, dst_ip: str, dport: int, payloads: list[bytes]) -> None:
        """Datagrams from the stranger's own address."""
        send_from(self.ns, "udp", dst_ip, dport, payloads)

    def send_spoofed(self, src_ip: str, dst_ip: str, dport: int, payloads: list[bytes]) -> None:
        """UDP datagrams whose outer IPv4 source is forged to ``src_ip`` (raw socket)."""
        packets = [ipv4(src_ip, dst_ip, 17, udp(50000, dport, p)) for p in payloads]
        send_from(self.ns, "raw", dst_ip, dport, packets)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


_SENDER = """
import socket, sys
kind, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)   # IP_HDRINCL implied
for h in sys.argv[4:]:
    s.sendto(bytes.fromhex(h), (dst, port if kind == "udp" else 0))
"""


def send_from(ns: str, kind: str, dst_ip: str, dport: int, payloads: list[bytes]) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER, kind, dst_ip, str(dport),
                    *[p.hex() for p in payloads]], check=True, capture_output=True, timeout=20)


def send_frames_from_container(lab: Any, i: int, j: int, frames: list[bytes]) -> None:
    """Raw Ethernet frames out of container (i, j)'s ethwe (AF_PACKET)."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            "s.bind(('ethwe', 0))\n"
            "for h in sys.argv[1:]:\n    s.send(bytes.fromhex(h))\n")
    subprocess.run(["ip", "netns", "exec", lab.container_ns(i, j), sys.executable, "-c", code,
                    *[f.hex() for f in frames]], check=True, capture_output=True, timeout=20)


# ------------------------------------------------------------------ the listener

_LISTENER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
print("ready", flush=True)
marker, linger = sys.argv[2], float(sys.argv[3])
sys.stdin.readline()
got, deadline = [], time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        got.append(s.recv(2048).decode(errors="replace"))
    except socket.timeout:
        continue
    if got[-1] == marker:
        deadline = min(deadline, time.monotonic() + linger)
print(" ".join(got), flush=True)
"""


class Listener:
    """A UDP socket on ``port`` in container (i, j) that keeps what reaches it.

    ``stop()`` returns the payloads received, reading on until the ``marker`` payload
    (a genuine datagram sent after the attack) has come and ``linger`` seconds more,
    so frames still in flight are counted (at most 30 s).
    """

    def __init__(self, lab: Any, i: int, j: int, port: int, marker: str, linger: float = 1.0) -> None:
        self.p = lab.popen_container(i, j, [sys.executable, "-c", _LISTENER, str(port), marker, str(linger)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "ready"

    def stop(self) -> list[str]:
        out, _ = self.p.communicate("stop\n", timeout=60)
        return out.split()


# ------------------------------------------------------------------ the routers' view

def report(lab: Any, i: int) -> dict[str, Any]:
    return json.loads(lab.exec(i, [*weave_command(), "report"]).stdout)


def drops(lab: Any, i: int) -> dict[str, int]:
    return report(lab, i).get("datapath", {}).get("drops", {})


def short_id(lab: Any, i: int) -> int:
    return int(report(lab, i)["router"]["short_id"])


def container_mac(lab: Any, i: int, j: int = 1) -> str:
    ps = json.loads(lab.exec(i, [*weave_command(), "ps", "--json"]).stdout)
    ns = f"netns:{lab.container_ns(i, j)}"
    return next(p["mac"] for p in ps if p["container"] == ns)


def wait_for(cond: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
