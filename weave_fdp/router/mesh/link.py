"""What the gossip parts need from the mesh: a link, and a node that sends on links.

``node.py`` implements these; ``gossip.py`` and ``topogossip.py`` depend only on them,
so imports run one way (node -> gossip, topogossip -> link) and either gossip part
can be driven by a test double.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from weave_fdp.router.mesh.codec import Features, PeerEntry
from weave_fdp.router.mesh.topology import Topology


class Link(Protocol):
    """A handshaken connection to a neighbour, as the node sees it."""

    peer: str
    features: Features
    outbound: bool
    remote_host: str
    remote_port: int
    established: bool
    tx_bytes: int
    rx_bytes: int

    def send(self, tag: int, body: Any) -> None: ...

    def close(self, reason: str) -> None: ...


class ChannelSender(Protocol):
    """The sends a gossip channel makes (node.py: MeshNode)."""

    def send_gossip(self, channel: str, payload: bytes, exclude: str | None = None) -> None: ...

    def send_broadcast(self, channel: str, payload: bytes, src: str | None = None) -> None: ...

    def send_unicast(self, channel: str, dst: str, payload: bytes, src: str | None = None) -> bool: ...


class TopologyHost(Protocol):
    """What topology dissemination reads and calls (node.py: MeshNode)."""

    @property
    def name(self) -> str: ...

    @property
    def links(self) -> Mapping[str, Link]: ...

    @property
    def topology(self) -> Topology: ...

    @property
    def rng(self) -> random.Random: ...

    def send(self, link: Link, tag: int, body: dict) -> None: ...

    def merge(self, link: Link, entries: list[PeerEntry]) -> None: ...
