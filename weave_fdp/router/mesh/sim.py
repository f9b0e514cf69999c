"""In-memory transport: many MeshNodes in one process, for tests and the benchmark.

Messages go through the real codec (encode, then decode on delivery), so byte
counts and validation are those of the TCP transport minus framing and crypto.
A ``SimNet`` gives links a one-way latency and counts messages in flight and sent
per peer; ``VirtualClockLoop`` runs asyncio on simulated time (a timer fires at
once, the clock jumping to it), so a run measures the CPU the peers spend, not
the time they wait.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import PeerEntry
from weave_fdp.router.mesh.node import Identity, MeshNode


class _VirtualSelector:
    """Never waits: moves the loop's clock to the next timer instead."""

    def __init__(self, loop: "VirtualClockLoop") -> None:
        self.loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("simulation stalled: nothing ready and no timer scheduled")
        self.loop.now += timeout
        return []

    def close(self) -> None:
        pass


class VirtualClockLoop(asyncio.BaseEventLoop):
    """An asyncio loop on simulated time (no I/O: in-memory links only).

    Use with ``asyncio.Runner(loop_factory=VirtualClockLoop)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _VirtualSelector(self)

    def time(self) -> float:
        return self.now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass


class SimNet:
    """Link latency and message accounting shared by the links of one simulated mesh."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency        # s, one way
        self.in_flight = 0            # messages sent and not yet delivered
        self.tx_msgs: dict[str, int] = {}    # peer name -> gossip messages sent
        self.tx_bytes: dict[str, int] = {}   # peer name -> gossip bytes sent (framed)
        self._entries: dict[bytes, PeerEntry] = {}   # by digest record: name and key
        self._rows: dict[tuple[str, ...], tuple[str, ...]] = {}

    def intern(self, entry: PeerEntry) -> PeerEntry:
        """One object per equal entry for all simulated peers (each decodes its own copy
        first, so the CPU is counted; only the memory is shared)."""
        kept = self._entries.get(entry.record)
        if kept is None or not _same_content(kept, entry):
            self._entries[entry.record] = kept = entry
        return kept

    def intern_row(self, row: tuple[str, ...]) -> tuple[str, ...]:
        """One tuple per equal graph row for all simulated peers (each computes its own first)."""
        return self._rows.setdefault(row, row)

    def count(self, sender: str, nbytes: int) -> None:
        self.tx_msgs[sender] = self.tx_msgs.get(sender, 0) + 1
        self.tx_bytes[sender] = self.tx_bytes.get(sender, 0) + nbytes


def _same_content(a: PeerEntry, b: PeerEntry) -> bool:
    """The fields a key does not pin down are equal (as the bytes both came in, when both
    came in protocol 3's layout; else without the dataclass's slower __eq__)."""
    wa, wb = a.__dict__.get("_wire3"), b.__dict__.get("_wire3")
    if wa is not None and wb is not None:
        return wa == wb
    return a.connections == b.connections and a.nickname == b.nickname and a.short_id == b.short_id


class SimLink:
    def __init__(self, node: MeshNode, remote: MeshNode, outbound: bool,
                 protocol_version: int = codec.PROTOCOL_MAX, net: SimNet | None = None) -> None:
        self.node = node
        self.net = net
        self._queue: deque[tuple[bytes, int]] = deque()
        self.protocol_version = protocol_version
        self.remote_node = remote
        self.other: SimLink | None = None
        self.features = remote.features(random.getrandbits(63), False, (), "sim")
        self.peer = remote.name
        self.outbound = outbound
        self.remote_host = f"sim-{remote.name}"
        self.remote_port = remote.port
        self.established = False
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.closed = False

    def send(self, tag: int, body: Any) -> None:
        if self.closed:
            return
        data = codec.encode_message(tag, body)
        n = len(data) + codec.FRAME_HEADER.size
        self.tx_bytes += n
        if tag in (codec.GOSSIP, codec.GOSSIP_BROADCAST, codec.GOSSIP_UNICAST):
            self.node.gossip_tx_bytes += n
        net = self.net
        if net is None:
            asyncio.get_running_loop().call_soon(self._deliver, data, n)
            return
        net.count(self.node.name, n)
        net.in_flight += 1
        # one queue per link: each timer delivers the oldest message, so order is kept
        # even where timers fall due at the same instant
        self._queue.append((data, n))
        asyncio.get_running_loop().call_later(net.latency, self._deliver_next)

    def _deliver_next(self) -> None:
        assert self.net is not None
        self.net.in_flight -= 1
        data, n = self._queue.popleft()
        self._deliver(data, n)

    def _deliver(self, data: bytes, n: int) -> None:
        other = self.other
        if other is None or other.closed:
            return
        other.rx_bytes += n
        tag, body = codec.decode_message(data)
        other.node.link_message(other, tag, body)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.node.link_down(self, reason)
        if self.other is not None:
            self.other.close("peer closed")


def make_node(i: int, **kw: Any) -> MeshNode:
    name = ":".join(f"{b:02x}" for b in (0x02, 0, 0, 0, i >> 8, i & 0xFF))
    ident = Identity(name=name, nickname=f"sim{i}", uid=random.getrandbits(63), incarnation=1,
                     short_id=i % 4096)
    return MeshNode(ident, **kw)


def connect(a: MeshNode, b: MeshNode, protocol_version: int = codec.PROTOCOL_MAX,
            net: SimNet | None = None) -> bool:
    """Join a (dialer) and b with an in-memory link pair, as a completed handshake would
    (at ``protocol_version``: 1 pushes topology entries, 2 gossips digests, 3 also
    carries entries in the binary layout)."""
    la, lb = SimLink(a, b, True, protocol_version, net), SimLink(b, a, False, protocol_version, net)
    la.other, lb.other = lb, la
    if not a.link_up(la):
        return False
    if not b.link_up(lb):
        la.close("refused")
        return False
    return True


def converged(nodes: list[MeshNode]) -> bool:
    """Every node holds every node's current entry (same version)."""
    want = {n.name: n.topology.local.key() for n in nodes}
    for n in nodes:
        peers = n.topology.peers
        if len(peers) != len(want):
            return False
        for name, key in want.items():
            e = peers.get(name)
            if e is None or e.key() != key:
                return False
    return True
