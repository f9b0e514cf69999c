"""One direct neighbour of the sleeve: its address, keys, PMTU and wire version, counted."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.crypto import Opener, Sealer
from weave_fdp.datapath.sleeve.drops import SleeveDrop
from weave_fdp.datapath.sleeve.pmtu import BIG_PAYLOAD, PmtuProber

PEER_TIMEOUT = 3.0           # s without any datagram: the peer's sleeve is down


@dataclass
class PeerLink:
    """State of the sleeve towards one direct neighbour."""

    name: bytes
    addr: tuple[str, int]
    sealer: Sealer | None
    opener: Opener | None
    prober: PmtuProber
    last_rx: float = 0.0
    rtt_ms: float | None = None
    up_since: float | None = None
    # Plain links with UDP GSO send super-frames as GSO trains of fragments even when big
    # datagrams pass: measured faster (the train crosses veths/bridges as one skb and
    # arrives in one GRO read; kernel IP fragments are ~45 skbs). Sealed links use big
    # datagrams: one seal per super-frame instead of ~45 is what makes encryption fast.
    gso_train: bool = False
    # Wire version in use with the peer: the highest both speak. From 2 on, frames bigger than
    # the path leave as one logical datagram (sealed once) cut into a UDP GSO train of
    # pieces: one skb through the underlay instead of ~45 IP fragments (see ``_send_pieces``).
    version: int = 1
    peer_version: int | None = None   # highest version the peer's heartbeats advertise (None: none yet)
    aesgcm: bool = False         # seal pieces with AES-256-GCM (both ends have it)
    takes_big: bool = False      # the peer takes frames over 64 KiB (its heartbeats set FEATURE_BIG)
    tx_seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))   # plain pieces' ids
    stats: dict[str, int] = field(default_factory=lambda: dict(tx_pkts=0, tx_bytes=0, rx_pkts=0, rx_bytes=0))

    def is_up(self, now: float) -> bool:
        return now - self.last_rx < PEER_TIMEOUT

    def overhead(self) -> int:
        return wire.HEADER.size + (wire.SEAL_OVERHEAD if self.sealer else 0)

    def path_limit(self) -> int:
        """Largest body of a datagram that crosses the path unfragmented (PMTU)."""
        return self.prober.payload - self.overhead()

    def body_limit(self) -> int:
        """Largest body one datagram to this peer may carry: a big one (the kernels
        fragment and reassemble it) once the big probe proved fragments pass."""
        big = self.prober.big_ok and not self.gso_train
        return (BIG_PAYLOAD if big else self.prober.payload) - self.overhead()

    def frame_capacity(self) -> int:
        """Largest Ethernet frame (wire segment) that fits one unfragmented datagram even
        with a vnet header: what containers may send (the MTU we advertise and enforce
        with ICMP), so the connection keeps working if fragments stop passing."""
        return self.path_limit() - 1 - wire.ENTRY.size - wire.VNET_LEN

    def mtu(self) -> int:
        """L3 MTU a container sees through this connection."""
        return self.frame_capacity() - 14


def check_source(link: PeerLink, addr: tuple[str, int]) -> None:
    """A datagram naming ``link``'s peer as its sender must come from that peer's underlay
    address (the one of its control connection): anyone else on the underlay could
    otherwise inject frames in its name (without a password nothing else proves it)."""
    if addr[0] != link.addr[0]:
        raise wire.WireError(SleeveDrop.WRONG_SOURCE, f"datagram from {addr[0]} claims peer "
                                                      f"{wire.bytes_to_name(link.name)} at {link.addr[0]}")
