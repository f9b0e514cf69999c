"""Generic gossip channels (topology is built in; IPAM and DNS plug in the same way).

A part implements ``Gossiper`` and registers it::

    channel = mesh.register_channel("ipam", my_gossiper)
    channel.gossip_neighbours(delta)     # neighbours merge it and pass on what was new
    channel.gossip_broadcast(payload)    # every reachable peer, once, along our broadcast tree
    channel.gossip_unicast(peer, payload)  # one peer, along unicast next hops

Payloads are opaque bytes (encode them with msgpack and decode them defensively).
Every ``gossip_interval`` the mesh also sends each channel's ``gossip()`` full state to a
few random neighbours, so peers that missed a delta converge anyway.
"""

from __future__ import annotations

from typing import Protocol

from weave_fdp.router.mesh.link import ChannelSender


class Gossiper(Protocol):
    def gossip(self) -> bytes | None:
        """Full state for periodic gossip and new connections (None: nothing to say)."""

    def on_gossip(self, src: str, payload: bytes) -> bytes | None:
        """Merge state gossiped by neighbour ``src``; return what was new to us (passed on) or None."""

    def on_gossip_broadcast(self, src: str, payload: bytes) -> None:
        """A broadcast originated by peer ``src``."""

    def on_gossip_unicast(self, src: str, payload: bytes) -> None:
        """A unicast from peer ``src`` to us."""


class GossipChannel:
    """Sending side of one named channel."""

    def __init__(self, node: ChannelSender, name: str, gossiper: Gossiper) -> None:
        self.node = node
        self.name = name
        self.gossiper = gossiper

    def gossip_neighbours(self, payload: bytes) -> None:
        self.node.send_gossip(self.name, payload)

    def gossip_broadcast(self, payload: bytes) -> None:
        self.node.send_broadcast(self.name, payload)

    def gossip_unicast(self, dst: str, payload: bytes) -> bool:
        """False when ``dst`` is unreachable now."""
        return self.node.send_unicast(self.name, dst, payload)
