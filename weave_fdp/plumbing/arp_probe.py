"""Duplicate address detection on the weave network (RFC 5227 ARP probes).

Before ``attach`` gives a container an address, the container's own ``ethwe``
(already on the bridge, datapath attached, no address yet) broadcasts ARP probes
for it: sender IP 0.0.0.0, so no neighbour table anywhere learns anything. The
probes follow the same path as any broadcast of that container (local ports,
fastdp or sleeve to every peer), so any host on the network that holds the
address answers, whichever host it lives on. Without a gossiped IPAM this is how
"already in use on the network" is found; with one it still catches addresses
configured by hand.

Conflicts seen: an ARP reply (or any ARP) whose sender IP is the address, and
another host's probe for the same address (two attaches racing, RFC 5227 2.1.1).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

from weave_fdp.plumbing.container_link import CONTAINER_IFNAME, inside

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST, ARP_REPLY = 1, 2
BROADCAST = b"\xff" * 6
#: Ethernet header + ARP for IPv4 over Ethernet (RFC 826)
ETH = struct.Struct("!6s6sH")
ARP = struct.Struct("!HHBBH6s4s6s4s")
MIN_FRAME = 60                 # shortest Ethernet frame without FCS: probes are padded to it

#: defaults: two probes 50 ms apart, then listen until 300 ms after the first.
#: Far shorter than RFC 5227's seconds: the overlay answers within milliseconds,
#: and attach must stay quick (``lab up --containers K`` attaches K per host).
PROBES = 2
INTERVAL = 0.05
WAIT = 0.3


def probe_frame(mac: bytes, ip: str) -> bytes:
    """An ARP probe from ``mac`` for ``ip``: who has ip? tell 0.0.0.0 (padded to 60 bytes)."""
    arp = ARP.pack(1, ETH_P_IP, 6, 4, ARP_REQUEST, mac, b"\0" * 4, b"\0" * 6, socket.inet_aton(ip))
    frame = ETH.pack(BROADCAST, mac, ETH_P_ARP) + arp
    return frame.ljust(MIN_FRAME, b"\0")


def conflict_in(frame: bytes, mac: bytes, ip: str) -> str | None:
    """The MAC (aa:bb:..) of another host claiming or probing ``ip`` in ``frame``, else None.

    Anything that is not a well-formed IPv4-over-Ethernet ARP frame is ignored.
    """
    if len(frame) < ETH.size + ARP.size:
        return None
    _dst, _src, etype = ETH.unpack_from(frame)
    if etype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = ARP.unpack_from(frame, ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY) or sha == mac:
        return None
    want = socket.inet_aton(ip)
    claims = spa == want
    races = op == ARP_REQUEST and spa == b"\0" * 4 and tpa == want
    return ":".join(f"{b:02x}" for b in sha) if claims or races else None


def address_in_use(netns_path: str, ip: str, *, ifname: str = CONTAINER_IFNAME, probes: int = PROBES,
                   interval: float = INTERVAL, wait: float = WAIT) -> str | None:
    """Probe for ``ip`` from ``ifname`` in the namespace at ``netns_path``.

    Returns the MAC of a host that holds (or is probing for) the address, or None
    when nobody answered within ``wait`` seconds.
    """
    ipaddress.IPv4Address(ip)   # ValueError for garbage: callers pass validated addresses
    with inside(netns_path):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
        mac = sock.getsockname()[4]
        frame = probe_frame(mac, ip)
        start = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            if sent < probes and now >= start + sent * interval:
                sock.send(frame)
                sent += 1
            deadline = start + wait
            if now >= deadline:
                return None
            next_send = start + sent * interval if sent < probes else deadline
            ready, _, _ = select.select([sock], [], [], max(0.0, min(deadline, next_send) - now))
            if ready:
                owner = conflict_in(sock.recv(2048), mac, ip)
                if owner is not None:
                    return owner
    finally:
        sock.close()
