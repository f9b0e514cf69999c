"""How big a UDP GSO train of the sleeve may be, and the largest frame one train carries. Pure.

A UDP_SEGMENT ``sendmsg`` takes at most ``GSO_MAX_SEGS`` datagrams and one IPv4
packet's worth of payload (65,507 bytes: the GSO skb is one IP packet until it is
segmented); we stay a little under that. A frame bigger than the path leaves as a
train of version-2 pieces of ``PMTU payload − 24`` bytes each (``wire.PIECE``), so
on a 1500-byte underlay one train carries 44 pieces. A 64 KiB TCP super-frame, the
kernel's default GSO limit, needs 45: two ``sendmsg`` calls, and two reads at the
receiver with the datagram rebuilt across them. Containers whose ``ethwe`` has
``gso_max_size`` = ``container_gso_max_size`` build super-frames that fit one train
(TCP keeps its aggregates below the device's limit minus its header room), so a
super-frame costs one ``sendmsg`` and one read; see docs/SLEEVE.md.

Where the kernel has IPv4 "BIG TCP" (6.3+), containers of a sleeve-only host build IPv4
super-frames of ``BIG_TRAINS`` trains (``big_super_frame``, 254,805 bytes on 1500): the
per-super-frame costs (a capture read, the Python around it, an inject, the receiving
stack's work and its ACK) are then paid once per four trains. The sleeve's own ports
take up to ``PORT_GSO_MAX``.
"""

from __future__ import annotations

import functools

from weave_fdp.datapath.sleeve import wire

GSO_MAX_BYTES = 65000        # UDP payload per UDP_SEGMENT sendmsg
GSO_MAX_SEGS = 64            # datagrams per sendmsg the kernel takes (UDP_MAX_SEGMENTS)
BIG_TRAINS = 4               # trains per IPv4 super-frame where the kernel has BIG TCP
PORT_GSO_MAX = 0x40000       # IPv4 super-frames the sleeve's port and container ports pass (wire.MAX_FRAME)
SEAL_TAG = 16                # AES-256-GCM tag or secretbox MAC after/before a sealed logical datagram
# type byte, entry header, virtio_net_hdr and seal around a frame sent in pieces
PIECED_OVERHEAD = 1 + wire.ENTRY.size + wire.VNET_LEN + SEAL_TAG


@functools.lru_cache(maxsize=64)
def segments_per_train(seg: int) -> int:
    """Datagrams of ``seg`` bytes one UDP_SEGMENT sendmsg may carry."""
    return max(1, min(GSO_MAX_SEGS, GSO_MAX_BYTES // seg))


def one_train_frame(payload: int) -> int:
    """Largest Ethernet frame (vnet header excluded) whose pieces fit one train on a path
    taking ``payload``-byte UDP datagrams, sealed or not."""
    chunk = payload - wire.PIECE.size
    return segments_per_train(payload) * chunk - PIECED_OVERHEAD


def container_gso_max_size(underlay_mtu: int) -> int:
    """``gso_max_size`` for containers' ``ethwe`` on an underlay of ``underlay_mtu`` bytes:
    their GSO super-frames then cross the sleeve in one train (63,669 on 1500). Never
    above the kernel's default (65,536), never below what makes GSO pointless."""
    return max(16384, min(65536, one_train_frame(underlay_mtu - wire.IP_UDP_OVERHEAD)))


def big_super_frame(underlay_mtu: int) -> int:
    """``gso_ipv4_max_size`` for containers' ``ethwe`` (and their bridge port) on a sleeve-only
    host whose kernel has BIG TCP: ``BIG_TRAINS`` full trains of pieces (254,805 on 1500)."""
    payload = underlay_mtu - wire.IP_UDP_OVERHEAD
    chunk = payload - wire.PIECE.size
    return max(container_gso_max_size(underlay_mtu),
               min(PORT_GSO_MAX, BIG_TRAINS * segments_per_train(payload) * chunk - PIECED_OVERHEAD))
