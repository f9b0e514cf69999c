"""IPAM in the router: the allocator wired to the mesh's ``ipam`` channel, the state dir and time.

Everything runs on the router's loop. After every event (a message, a request, a tick, a
mesh change) ``_flush`` persists the allocator if it changed (before anything leaves or
any answer is given: a crash never loses an acknowledged address), sends its outbox and
wakes the requests that wait. A request that cannot be answered yet waits for a change,
up to its timeout, then fails with the allocator's reason (never a silent hang).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weave_fdp.errors import FdpError, ProtocolError
from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.ipam import persist
from weave_fdp.router.ipam.addr import Range, fmt_range, ip, to_net
from weave_fdp.router.ipam.allocator import Allocator, Mode, Pending
from weave_fdp.router.state import atomic_write_bytes
from weave_fdp.router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from weave_fdp.router.mesh.node import MeshNode

log = logging.getLogger(__name__)

CHANNEL = "ipam"
TICK_S = 0.5
DEFAULT_WAIT_S = 30.0     # a request waits this long for consensus or space before failing


class IpamTimeout(FdpError):
    """A request that could not be answered in time; the message says why."""


class IpamService:
    def __init__(self, me: str, rng: Range, default_subnet: Range, mode: Mode, state_dir: Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.alloc = Allocator(me, rng, mode)
        self.default_subnet = default_subnet
        self.file = Path(state_dir) / persist.FILE_NAME
        self.clock = clock
        self.mesh: MeshNode | None = None
        self.channel: Any = None
        self._changed = asyncio.Event()
        self._greeted: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.rlog = RateLimitedLog(log, clock=clock)

    # ------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Read the state file; CorruptState (naming the file and the fix) if it cannot be trusted."""
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            self.alloc.dirty = True    # a seeded ring is saved at once
            return
        except OSError as exc:
            raise persist.CorruptState(f"IPAM state file {self.file} cannot be read: {exc.strerror}",
                                       fix="check its permissions, or remove it to start afresh") from None
        self.alloc.restore(persist.decode(data, str(self.file)))
        if self.alloc.mode.kind == "seed" and self.alloc.ring.empty():
            self.alloc.ring.found(self.alloc.mode.seeds)
            self.alloc.dirty = True

    def start(self, mesh: "MeshNode") -> None:
        self.mesh = mesh
        self.channel = mesh.register_channel(CHANNEL, self)
        mesh.listeners.append(self.on_mesh)
        self._task = asyncio.get_running_loop().create_task(self._ticker())
        self.on_mesh()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._flush()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.alloc.tick(self.clock())
                self._flush()
            except Exception:
                log.exception("ipam: tick failed")

    # ------------------------------------------------------------ mesh

    def on_mesh(self) -> None:
        node = self.mesh
        if node is None:
            return
        routes = node.routes
        reachable = {n for n in node.topology.peers if n != node.name and routes.reachable(n)}
        nicks = {n: e.nickname for n, e in node.topology.peers.items()}
        self.alloc.set_peers(reachable, nicks)
        # a new neighbour gets our full state at once (periodic gossip is slow)
        links = set(node.links)
        for peer in links - self._greeted:
            if self.channel.gossip_unicast(peer, self.alloc.gossip()):
                self._greeted.add(peer)
        self._greeted &= links
        self.alloc.tick(self.clock())
        self._flush()

    def gossip(self) -> bytes | None:
        payload = self.alloc.gossip()
        self._flush()
        return payload

    def on_gossip(self, src: str, payload: bytes) -> bytes | None:
        self._receive(src, payload)
        return None     # changes travel by broadcast; the periodic full state heals the rest

    def on_gossip_broadcast(self, src: str, payload: bytes) -> None:
        self._receive(src, payload)

    def on_gossip_unicast(self, src: str, payload: bytes) -> None:
        self._receive(src, payload)

    def _receive(self, src: str, payload: bytes) -> None:
        try:
            self.alloc.on_message(src, payload, self.clock())
        except ProtocolError as exc:
            self.rlog.warning(f"bad:{src}", "ipam: refused a message from %s: %s", src, exc)
        for peer, why in self.alloc.conflicts.items():
            self.rlog.error(f"conflict:{peer}", "ipam: refusing the ring of %s: %s", peer, why)
        self._flush()

    def _flush(self) -> None:
        a = self.alloc
        if a.dirty:
            atomic_write_bytes(self.file, persist.encode(a.snapshot()))
            a.dirty = False
        for m in a.take_outbox():
            if self.channel is None:
                continue
            if m.how == "broadcast":
                self.channel.gossip_broadcast(m.payload)
            elif m.dst is not None:
                self.channel.gossip_unicast(m.dst, m.payload)
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ requests

    async def _wait(self, attempt: Callable[[float], Any], timeout: float, what: str) -> Any:
        deadline = self.clock() + timeout
        while True:
            res = attempt(self.clock())
            self._flush()
            if not isinstance(res, Pending):
                return res
            left = deadline - self.clock()
            if left <= 0:
                raise IpamTimeout(f"{what}: gave up after {timeout:g} s, {res.reason}",
                                  fix="see weave-fdp status ipam")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), min(left, TICK_S * 2))
            except asyncio.TimeoutError:
                pass

    def subnet(self, cidr: str | None) -> Range:
        """The subnet an allocation asks for (the rules of every attach: weave_fdp/addresses.py)."""
        from weave_fdp.addresses import subnet
        from weave_fdp.router.ipam.addr import net_range, parse_cidr

        if cidr in (None, "", "default"):
            return self.default_subnet
        return net_range(parse_cidr(subnet(cidr), "subnet"))

    async def allocate(self, ident: str, subnet: Range, timeout: float = DEFAULT_WAIT_S) -> str:
        """``ident``'s address in ``subnet`` as a CIDR with the subnet's prefix length."""
        self.alloc.check_subnet(subnet)
        a = await self._wait(lambda now: self.alloc.allocate(ident, subnet, now), timeout,
                             f"no address for {ident} in {to_net(subnet)}")
        return f"{ip(a)}/{to_net(subnet).prefixlen}"

    async def claim(self, ident: str, addr: int, timeout: float = DEFAULT_WAIT_S) -> bool:
        """Hold an explicit address for ``ident``; False when it lies outside the range (unmanaged)."""
        return bool(await self._wait(lambda now: self.alloc.claim(ident, addr, now), timeout,
                                     f"cannot claim {ip(addr)} for {ident}"))

    def release(self, ident: str, addr: int | None = None) -> list[int]:
        gone = self.alloc.release(ident, addr)
        self._flush()
        return gone

    async def prime(self, timeout: float) -> dict[str, Any]:
        await self._wait(lambda now: True if self.alloc.prime(now) else Pending(self.alloc._consensus_reason()),
                         timeout, "IPAM is not ready")
        return self.status()

    def rmpeer(self, peer: str) -> dict[str, Any]:
        name, moved = self.alloc.rmpeer(peer)
        self._flush()
        return {"peer": name, "label": self.alloc.label(name), "reclaimed": moved}

    async def handoff(self, timeout: float = 3.0) -> dict[str, Any]:
        """Give our space to a reachable peer and wait for its acknowledgement (reset)."""
        to = self.alloc.handoff()
        self._flush()
        if to is None:
            return {"to": None}
        try:
            await self._wait(lambda now: True if self.alloc.handoff_acked == to else Pending(
                f"peer {self.alloc.label(to)} did not acknowledge"), timeout, "handing over the IP space")
        except IpamTimeout as exc:
            return {"to": to, "label": self.alloc.label(to), "acknowledged": False, "error": str(exc)}
        return {"to": to, "label": self.alloc.label(to), "acknowledged": True}

    # ------------------------------------------------------------ report

    def status(self) -> dict[str, Any]:
        a = self.alloc
        total = a.range[1] - a.range[0]
        owned = a.ring.owned()
        me = a.me
        free_of = {}
        for lo, hi, e in a.ring.spans():
            free_of[e.peer] = free_of.get(e.peer, 0) + e.free
        mine_owned, mine_free = a.owned_free()
        entries = []
        ranges: dict[str, list[str]] = {}
        for peer in owned:
            ranges[peer] = [fmt_range(r) for r in a.ring.ranges_of(peer)]
        for peer in sorted(owned, key=lambda p: (p != me, p)):
            entries.append({"name": peer, "nickname": a.nicknames.get(peer), "size": owned[peer],
                            "share": round(100.0 * owned[peer] / total, 2),
                            "free": mine_free if peer == me else free_of.get(peer, 0),
                            "active": len(a.allocs) if peer == me else None,
                            "reachable": peer == me or peer in a.reachable, "ranges": ranges[peer][:64]})
        return {"status": a.status(), "mode": a.mode.kind, "quorum": a.mode.quorum,
                "seeds": list(a.mode.seeds), "known": a.paxos.known() if a.paxos else 0,
                "range": str(to_net(a.range)), "range_text": fmt_range(a.range),
                "default_subnet": str(to_net(self.default_subnet)), "ring_seeds": list(a.ring.seeds),
                "owned": mine_owned, "free": mine_free, "allocated": len(a.allocs),
                "claims_pending": [ip(x) for x in sorted(a.claims)],
                "entries": entries, "tokens": len(a.ring.tokens),
                "conflicts": [{"peer": p, "label": a.label(p), "reason": r} for p, r in sorted(a.conflicts.items())],
                "allocations": {ip(x): who for x, who in sorted(a.allocs.items())}}


# ------------------------------------------------------------------ API ops

def _timeout(args: dict[str, Any], default: float = DEFAULT_WAIT_S) -> float:
    t = args.get("timeout", default)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 3600:
        from weave_fdp.errors import UsageError

        raise UsageError(f"timeout {t!r} is not a number of seconds in 0..3600")
    return float(t)


def _ident(args: dict[str, Any]) -> str:
    from weave_fdp.errors import UsageError

    ident = args.get("container_id")
    if not isinstance(ident, str) or not ident or len(ident) > 256:
        raise UsageError("container_id must be a non-empty string", fix="pass the container's id")
    return ident


def register_ops(api: Any, svc: IpamService, wrap: Callable[[Any], Any] = lambda fn: fn) -> None:
    """prime, rmpeer and the allocation ops a CNI plugin uses (docs/IPAM.md, "API")."""
    from weave_fdp.errors import UsageError
    from weave_fdp.router.ipam.addr import ip_int

    async def prime(args: dict[str, Any]) -> dict[str, Any]:
        return await svc.prime(_timeout(args))

    async def rmpeer(args: dict[str, Any]) -> list[dict[str, Any]]:
        peers = args.get("peers")
        if not isinstance(peers, list) or not peers or not all(isinstance(p, str) for p in peers):
            raise UsageError("rmpeer needs peer names", fix="e.g. weave-fdp rmpeer 7e:aa:bb:cc:dd:ee")
        return [svc.rmpeer(p) for p in peers]

    async def ipam_allocate(args: dict[str, Any]) -> dict[str, Any]:
        ident = _ident(args)
        cidr = await svc.allocate(ident, svc.subnet(args.get("subnet")), _timeout(args))
        return {"container_id": ident, "cidr": cidr}

    async def ipam_claim(args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.addresses import host_cidr

        ident = _ident(args)
        text = args.get("cidr")
        host_cidr(text, what="cidr")   # the rules of every attach
        managed = await svc.claim(ident, ip_int(text.split("/")[0]), _timeout(args))
        return {"container_id": ident, "cidr": text, "managed": managed}

    async def ipam_release(args: dict[str, Any]) -> dict[str, Any]:
        ident = _ident(args)
        addr = args.get("address")
        gone = svc.release(ident, ip_int(addr.split("/")[0]) if isinstance(addr, str) and addr else None)
        return {"container_id": ident, "released": [ip(a) for a in gone]}

    async def ipam_handoff(args: dict[str, Any]) -> dict[str, Any]:
        return await svc.handoff(_timeout(args, 3.0))

    for op, fn in {"prime": prime, "rmpeer": rmpeer, "ipam_allocate": ipam_allocate, "ipam_claim": ipam_claim,
                   "ipam_release": ipam_release, "ipam_handoff": ipam_handoff}.items():
        api.register(op, wrap(fn))
