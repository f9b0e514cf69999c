"""What fastdp keeps in the kernel while the control plane blinks: pure rules, time passed in.

The kernel keeps forwarding while a router restarts or a control connection is
replaced, so the fastdp overlay must not tear entries down the moment the mesh
stops showing them:

- *Lost connections* (:class:`LostConnections`): the last plan entries of a peer
  whose connection went away stay while its kernel still answers fastdp
  heartbeats (its router restarts; its pinned datapath forwards meanwhile), else
  for ``GRACE`` seconds. A peer back on a connection before the topology has its
  new incarnation keeps its last short ID meanwhile.
- *Startup* (:class:`StartupGrace`): a restarted router found maps in the kernel;
  for ``STARTUP_GRACE`` seconds an empty mesh does not overwrite them, and a peer
  that was in fastdp mode there stays in it until the switch decides.
- *Mode and receive rules* (:func:`mode_for`, :func:`accepts_fastdp`): what the
  BPF maps say for a peer before and after the switch decided.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from weave_fdp.datapath.plan import MeshInputs

GRACE = 30.0           # s a lost control connection keeps its datapath entries
STARTUP_GRACE = 10.0   # s a restarted router keeps the kernel's entries until the mesh is back


@dataclass
class StartupGrace:
    """The fastdp entries a (re)started router found in the kernel, and when it started."""

    started: float
    boot_fastdp: set[int] = field(default_factory=set)   # short IDs in fastdp mode in the maps found
    seen_at: dict[str, float] = field(default_factory=dict)   # peer -> its connection first seen established

    def active(self, now: float) -> bool:
        return now - self.started < STARTUP_GRACE

    def holds_kernel(self, has_connections: bool, now: float) -> bool:
        """Leave the maps as found: no connection yet, and they held fastdp entries."""
        return not has_connections and bool(self.boot_fastdp) and self.active(now)

    def was_fastdp(self, short_id: int | None, now: float) -> bool:
        """The peer with ``short_id`` was in fastdp mode in the maps found (within the grace)."""
        return self.active(now) and short_id is not None and short_id in self.boot_fastdp

    def connections(self, established: Collection[str], present: Collection[str], now: float) -> None:
        """Note when each connection was first seen established; forget the gone ones."""
        for peer in established:
            self.seen_at.setdefault(peer, now)
        for peer in [p for p in self.seen_at if p not in present]:
            del self.seen_at[peer]

    def last_heartbeat(self, peer: str, last_pong: float | None, was_fastdp: bool) -> float | None:
        """When ``peer`` last proved fastdp: its last pong; for a peer that was on fastdp
        before the restart and has not answered yet, when its connection came up (the
        kernel kept forwarding meanwhile, so fastdp gets the switch's hold time to prove it)."""
        if last_pong is not None:
            return last_pong
        return self.seen_at.get(peer) if was_fastdp else None


def mode_for(peer: str, modes: Mapping[str, str], was_fastdp: bool) -> str:
    """The mode written to the BPF map for ``peer``: the overlay switch's decision.

    Before the switch has decided (a connection seconds old), the kernel keeps
    what it had: a router restarted while traffic flowed keeps its fastdp entries
    (the switch confirms them with the first heartbeat), a new connection starts
    on sleeve.
    """
    if peer in modes:
        return modes[peer]
    return "fastdp" if was_fastdp else "sleeve"


def accepts_fastdp(mode: str, healthy: bool, unusable: str | None) -> bool:
    """Whether plain VXLAN data from a peer is accepted: its connection is in fastdp mode,
    or about to be (its heartbeats answer and nothing rules fastdp out). The peer's
    switch may move to fastdp a moment before ours: its first frames must not be lost.
    (Sealed connections are refused whatever this says.)"""
    return mode == "fastdp" or (healthy and unusable is None)


class LostConnections:
    """The keep-lost rule (see the module docstring): remembers the last plan inputs."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.lost_at: dict[str, float] = {}   # peer -> when its connection was lost
        self.last: MeshInputs | None = None   # the inputs of the previous plan

    def __contains__(self, peer: str) -> bool:
        return peer in self.lost_at

    def keep(self, mesh: MeshInputs, conns: Collection[str], now: float,
             healthy: Callable[[str], bool]) -> None:
        """Merge into ``mesh`` (the plan inputs from the established connections ``conns``)
        the last entries of lost fastdp connections that are still kept."""
        last, self.last = self.last, mesh
        if last is None:
            return
        for peer in conns:
            if peer not in mesh.short_ids and peer in last.short_ids:
                mesh.short_ids[peer] = last.short_ids[peer]
        for peer in last.hop_ips:
            if peer not in conns:
                self.lost_at.setdefault(peer, now)
        for peer in list(self.lost_at):
            if peer in conns or (now - self.lost_at[peer] > self.grace and not healthy(peer)):
                del self.lost_at[peer]
                continue
            if peer not in last.short_ids or last.modes.get(peer) != "fastdp":
                continue
            _carry(mesh, last, peer)
        mesh.short_ids = {n: s for n, s in mesh.short_ids.items() if s >= 0}

    def targets(self) -> dict[str, tuple[int, str]]:
        """Lost peers still kept, with their last short ID and address: they keep being
        heartbeated (so a router restart on either side does not read as a dead path)."""
        last = self.last
        if last is None:
            return {}
        return {p: (last.short_ids[p], last.hop_ips[p]) for p in self.lost_at
                if p in last.short_ids and p in last.hop_ips}


def _carry(mesh: MeshInputs, last: MeshInputs, peer: str) -> None:
    """Copy ``peer``'s fastdp entries (as a neighbour, next hop and broadcast hop) from ``last``."""
    mesh.short_ids.setdefault(peer, last.short_ids[peer])
    mesh.hop_ips[peer] = last.hop_ips[peer]
    mesh.modes[peer] = "fastdp"
    mesh.receive[peer] = "fastdp"
    if peer in last.sealed:
        mesh.sealed.add(peer)
    for dest, hop in last.unicast.items():
        if hop == peer and dest not in mesh.unicast:
            mesh.short_ids.setdefault(dest, last.short_ids.get(dest, -1))
            mesh.unicast[dest] = peer
    for src, hops in last.broadcast.items():
        if peer in hops and peer not in mesh.broadcast.setdefault(src, []):
            mesh.broadcast[src].append(peer)
