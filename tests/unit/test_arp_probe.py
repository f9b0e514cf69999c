"""ARP probe frames and conflict parsing (duplicate address detection)."""

from __future__ import annotations

import re
import socket

from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.plumbing.arp_probe import ARP, ARP_REPLY, ARP_REQUEST, ETH, ETH_P_ARP, conflict_in, probe_frame

ME = bytes.fromhex("020000000001")
THEM = bytes.fromhex("020000000002")
IP = "10.32.1.1"


def arp(op: int, sha: bytes, spa: str, tpa: str, etype: int = ETH_P_ARP) -> bytes:
    return ETH.pack(b"\xff" * 6, sha, etype) + ARP.pack(1, 0x0800, 6, 4, op, sha, socket.inet_aton(spa),
                                                        b"\0" * 6, socket.inet_aton(tpa))


def test_probe_frame_is_an_rfc5227_probe() -> None:
    f = probe_frame(ME, IP)
    assert len(f) == 60
    dst, src, etype = ETH.unpack_from(f)
    assert (dst, src, etype) == (b"\xff" * 6, ME, ETH_P_ARP)
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = ARP.unpack_from(f, ETH.size)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, ARP_REQUEST)
    assert (sha, spa, tha, tpa) == (ME, b"\0" * 4, b"\0" * 6, socket.inet_aton(IP))
    assert conflict_in(f, ME, IP) is None                       # our own probe echoed back


def test_conflicts_found() -> None:
    assert conflict_in(arp(ARP_REPLY, THEM, IP, "0.0.0.0"), ME, IP) == "02:00:00:00:00:02"
    assert conflict_in(arp(ARP_REQUEST, THEM, IP, "10.32.1.9"), ME, IP) == "02:00:00:00:00:02"   # announcement
    assert conflict_in(arp(ARP_REQUEST, THEM, "0.0.0.0", IP), ME, IP) == "02:00:00:00:00:02"     # racing probe


def test_no_conflict() -> None:
    assert conflict_in(arp(ARP_REPLY, THEM, "10.32.1.2", "0.0.0.0"), ME, IP) is None   # another address
    assert conflict_in(arp(ARP_REQUEST, THEM, "10.32.1.2", IP), ME, IP) is None        # someone asks for it
    assert conflict_in(arp(ARP_REPLY, THEM, IP, "0.0.0.0", etype=0x0800), ME, IP) is None
    assert conflict_in(arp(ARP_REPLY, THEM, IP, "0.0.0.0")[:41], ME, IP) is None        # truncated


@given(st.binary(max_size=80))
def test_garbage_never_raises(data: bytes) -> None:
    owner = conflict_in(data, ME, IP)
    assert owner is None or re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", owner)
