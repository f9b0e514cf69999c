"""Shared helpers of the fastdp BPF-tier tests: loading, packet building, events."""

from __future__ import annotations

import ctypes
import struct

from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi


def eth(dst: str, src: str, ethertype: int) -> bytes:
    return abi.mac_bytes(dst) + abi.mac_bytes(src) + struct.pack("!H", ethertype)


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag_off: int = 0) -> bytes:
    import socket
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag_off, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + payload


def udp(sport: int, dport: int, payload: bytes = b"x" * 18) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def arp(sha: str, spa: str, tpa: str, op: int = 1) -> bytes:
    """An ARP body (IPv4 over Ethernet, after the Ethernet header)."""
    import socket
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, abi.mac_bytes(sha), socket.inet_aton(spa),
                       bytes(6), socket.inet_aton(tpa))


def skb_ctx(*, cb: tuple[int, ...] = ()) -> bytes:
    """A struct __sk_buff for ctx_in: zeros except cb[0..4] (offset 48)."""
    ctx = bytearray(68)  # struct __sk_buff up to the end of cb[5]: the rest stays zero
    for i, v in enumerate(cb):
        struct.pack_into("=I", ctx, 48 + 4 * i, v)
    return bytes(ctx)


def tunnel_ctx(vni: int, remote_ip: str) -> bytes:
    """ctx_in carrying a received tunnel key for test builds (cb[0]=VNI, cb[1]=IP host order, cb[2]=1)."""
    import ipaddress
    return skb_ctx(cb=(vni, int(ipaddress.IPv4Address(remote_ip)), 1, 0, 0))


def events(dp) -> list[tuple[str, int, str, int]]:
    """(kind, vni, ip, ifindex) recorded by the last runs, then cleared."""
    from weave_fdp.datapath.fastdp.maps import BpfMap

    table = BpfMap(dp.table_fd("fdp_test_events"), "fdp_test_events", ctypes.c_uint32, abi.TestEvent)
    head = table.get(ctypes.c_uint32(0))
    out = []
    for i in range(1, (head.kind if head else 0) + 1):
        ev = table.get(ctypes.c_uint32(i))
        out.append((abi.TestKind(ev.kind).name, ev.vni, abi.be32_to_ip(ev.ip) if ev.ip else "", ev.ifindex))
    for i in range(abi.TEST_MAX_EVENTS):
        table.set(ctypes.c_uint32(i), abi.TestEvent())
    return out


TEST_RUN_IFINDEX = 1   # BPF_PROG_TEST_RUN runs tc programs on the namespace's loopback


def run(dp, prog: str, frame: bytes, ctx: bytes | None = None):
    """Run ``prog`` once on ``frame``: (result, events it recorded, drop counters it moved)."""
    events(dp)
    before = dp.drops()
    res = bpf_syscall.prog_test_run(dp.prog_fd(prog), frame, ctx_in=ctx)
    after = dp.drops()
    return res, events(dp), {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def allow_port(dp, mac: str, ips: list[str], ifindex: int = TEST_RUN_IFINDEX) -> None:
    """Register the container port test runs come in by (fdp_port_addrs): its MAC and IPv4s."""
    val = abi.PortAddrs(count=len(ips))
    ctypes.memmove(val.mac, abi.mac_bytes(mac), 6)
    for i, ip in enumerate(ips):
        val.ips[i] = abi.ip_to_be32(ip)
    dp.maps["fdp_port_addrs"].set(ctypes.c_uint32(ifindex), val)


def learn(dp, mac: str, peer: int) -> None:
    """A learned MAC entry, as fdp_from_tunnel would leave it."""
    dp.maps["fdp_learned"].set(abi.mac_key(mac), abi.MacEntry(peer=peer, flags=abi.MacFlags.LEARNED))
