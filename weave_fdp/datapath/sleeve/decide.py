"""Where a frame goes: the sleeve's forwarding decisions, pure (no sockets, no clock).

Routing is by destination *peer*. A frame captured from the bridge goes to the peer
its destination MAC was learned from (the next hop toward that peer), or, for group
and unknown MACs, along this host's own broadcast tree (flooded like Weave does). An
entry received from a neighbour is delivered here when it names this peer or the
broadcast peer, relayed toward its destination peer otherwise, and a broadcast is
passed on to this peer's children on its source's broadcast tree.

The tables are the forwarder's: ``macs`` (MAC -> (peer, learned at)), ``unicast``
(destination peer -> next hop), ``broadcast`` (source peer -> next hops) and ``links``
(the neighbours the sleeve has a link to). A refused hop is a counted drop, named.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from typing import NamedTuple

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.drops import SleeveDrop



class Verdict(NamedTuple):
    """What to do with one frame."""

    deliver: bool                          # hand it to this host's bridge port
    dst: bytes                             # destination peer of its entry (wire.BROADCAST: a flood)
    hops: tuple[bytes, ...]                # neighbours to send it to
    drops: tuple[tuple[SleeveDrop, bytes], ...]   # (reason, peer) per refused destination or hop


def _to_links(deliver: bool, dst: bytes, hops: Sequence[bytes], links: Container[bytes],
              drops: tuple[tuple[SleeveDrop, bytes], ...] = ()) -> Verdict:
    ok = tuple(h for h in hops if h in links)
    if len(ok) != len(hops):
        drops += tuple((SleeveDrop.NOT_SLEEVE, h) for h in hops if h not in links)
    return Verdict(deliver, dst, ok, drops)


def route_captured(dst_mac: bytes, local: bytes, macs: Mapping[bytes, tuple[bytes, float]],
                   unicast: Mapping[bytes, bytes], broadcast: Mapping[bytes, Sequence[bytes]],
                   links: Container[bytes], floods_to: Callable[[bytes], bool]) -> Verdict:
    """A frame to ``dst_mac`` captured on this host's bridge port (``local``: this peer).

    ``floods_to(hop)``: whether this host's own floods go to ``hop`` by sleeve (a
    neighbour reached by fastdp gets them from the kernel instead).
    """
    known = None if dst_mac[0] & 1 else macs.get(dst_mac)
    if known is None:      # group MAC, or a unicast one not learned yet: flood
        return _to_links(False, wire.BROADCAST, [h for h in broadcast.get(local, ()) if floods_to(h)], links)
    dst = known[0]
    hop = unicast.get(dst)
    if hop is None:
        return Verdict(False, dst, (), ((SleeveDrop.NO_ROUTE, dst),))
    return _to_links(False, dst, (hop,), links)


def route_received(src: bytes, dst: bytes, ttl: int, from_peer: bytes, local: bytes,
                   unicast: Mapping[bytes, bytes], broadcast: Mapping[bytes, Sequence[bytes]],
                   links: Container[bytes]) -> Verdict:
    """An entry (frame from peer ``src`` to peer ``dst``, ``ttl`` left) that neighbour
    ``from_peer`` sent us. A relayed copy leaves with ``ttl - 1``; none leaves at 1."""
    if dst == local:
        return Verdict(True, dst, (), ())
    if dst == wire.BROADCAST:
        hops = [h for h in broadcast.get(src, ()) if h != from_peer]
        deliver = True
    else:
        hop = unicast.get(dst)
        if hop is None:
            return Verdict(False, dst, (), ((SleeveDrop.UNKNOWN_PEER, dst),))
        if hop == from_peer:
            return Verdict(False, dst, (), ((SleeveDrop.ROUTING_LOOP, dst),))
        hops, deliver = [hop], False
    if hops and ttl <= 1:
        return Verdict(deliver, dst, (), tuple((SleeveDrop.TTL_EXCEEDED, dst) for _ in hops))
    return _to_links(deliver, dst, hops, links)
