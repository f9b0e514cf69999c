"""Connection maker: which addresses to dial, when to retry, what to show for each.

Targets are the direct peers (launch/connect, persisted) plus, with discovery, the
addresses other peers announce for their connections. A target is satisfied when a
link to its peer (or from its host) exists. Failed dials back off exponentially with
jitter (1 s doubling up to 2 min), so a dead peer costs little and a fleet
restarting together does not dial in lock-step.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from weave_fdp.router.config import format_address
from weave_fdp.router.mesh.node import MeshNode

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0    # seconds
BACKOFF_MAX = 120.0   # seconds


def backoff(attempt: int, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0-based): 1, 2, 4 ... 120 s, +-25% jitter."""
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(attempt, 16))) * rng.uniform(0.75, 1.25)


@dataclass
class Target:
    host: str
    port: int
    direct: bool = False
    state: str = "pending"          # pending | connecting | connected | failed | retrying
    attempts: int = 0
    last_error: str | None = None
    retry_at: float = 0.0           # loop time
    peer: str | None = None         # peer name once a handshake told us
    is_self: bool = False

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


Dial = Callable[[str, int], Awaitable[str]]


class ConnectionMaker:
    def __init__(self, node: MeshNode, dial: Dial, *, discovery: bool = True,
                 rng: random.Random | None = None) -> None:
        self.node = node
        self.dial = dial
        self.discovery = discovery
        self.rng = rng or random.Random()
        self.targets: dict[tuple[str, int], Target] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        node.listeners.append(self._on_topology)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._runner:
            self._runner.cancel()
        for t in self._tasks.values():
            t.cancel()

    # ------------------------------------------------------------ target list

    def direct(self) -> list[str]:
        return [t.address for t in self.targets.values() if t.direct]

    def add_direct(self, addrs: list[tuple[str, int]], replace: bool = False) -> list[str]:
        """Make ``addrs`` direct peers; with ``replace`` they become the whole list.

        Replaced targets are dropped at once: their dial in flight is cancelled, their
        retries stop and the connection we made to them is closed (unless discovery
        still wants that address). Returns the addresses replaced.
        """
        replaced: list[str] = []
        if replace:
            keep = set(addrs)
            for key, t in list(self.targets.items()):
                if t.direct and key not in keep:
                    t.direct = False
                    replaced.append(t.address)
                    self._drop(key, t)
        for host, port in addrs:
            t = self.targets.setdefault((host, port), Target(host, port))
            t.direct = True
            if t.state in ("failed", "retrying"):
                t.retry_at = 0.0  # the user asked: try now
        self._prune()
        self.kick()
        return replaced

    def _drop(self, key: tuple[str, int], t: Target) -> None:
        """Stop dialing a replaced target and close the connection we dialed to it."""
        if self.discovery and key in self._discovered():
            return   # still an address some peer announces: discovery keeps it
        self._close_links_to(t.host, t.port)
        self.targets.pop(key, None)   # a dial in flight finds it gone and closes what it made

    def _close_links_to(self, host: str, port: int) -> None:
        for link in list(self.node.links.values()):
            if link.outbound and link.remote_host == host and link.remote_port == port:
                link.close("no longer a direct peer (connect --replace)")

    def forget(self, addrs: list[tuple[str, int]]) -> list[str]:
        """Stop dialing these direct peers; returns those that were not targets."""
        unknown = []
        for key in addrs:
            t = self.targets.get(key)
            if t is None or not t.direct:
                unknown.append(format_address(*key))
            else:
                t.direct = False
        self._prune()
        return unknown

    def _discovered(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        node = self.node
        for name, entry in node.topology.peers.items():
            if name == node.name:
                continue
            for c in entry.connections:
                if c.peer == node.name or c.peer in node.links:
                    continue
                host, _, port = c.address.rpartition(":")
                if host and port.isdigit():
                    out.add((host.strip("[]"), int(port)))
        return out

    def _on_topology(self) -> None:
        if self.discovery:
            for key in self._discovered():
                self.targets.setdefault(key, Target(*key))
            self._prune()
        self.kick()

    def _prune(self) -> None:
        keep = self._discovered() if self.discovery else set()
        for key, t in list(self.targets.items()):
            if not t.direct and key not in keep and key not in self._tasks:
                del self.targets[key]

    # ------------------------------------------------------------ dialing

    def kick(self) -> None:
        self._wake.set()

    def link_lost(self, peer: str) -> None:
        """A link went down: its target retries soon (not at once: the peer may be restarting)."""
        now = time.monotonic()
        for t in self.targets.values():
            if t.peer == peer:
                t.state = "retrying"
                t.retry_at = now + backoff(0, self.rng)
        self.kick()

    def _satisfied(self, t: Target) -> bool:
        if t.peer is not None and t.peer in self.node.links:
            return True
        for link in self.node.links.values():
            if link.remote_host == t.host and (not link.outbound or link.remote_port == t.port):
                t.peer = link.peer
                return True
        return False

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            next_at = now + 60.0
            for key, t in list(self.targets.items()):
                if t.is_self or key in self._tasks:
                    continue
                if self._satisfied(t):
                    t.state, t.attempts, t.last_error = "connected", 0, None
                    continue
                if t.state == "connected":
                    t.state = "retrying"
                    t.retry_at = now + backoff(0, self.rng)
                if t.retry_at <= now:
                    if len(self.node.links) + len(self._tasks) >= self.node.conn_limit:
                        t.last_error = f"connection limit ({self.node.conn_limit}) reached"
                        continue
                    t.state = "connecting"
                    self._tasks[key] = asyncio.get_running_loop().create_task(self._attempt(key, t))
                else:
                    next_at = min(next_at, t.retry_at)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, next_at - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    async def _attempt(self, key: tuple[str, int], t: Target) -> None:
        try:
            t.peer = await self.dial(t.host, t.port)
            t.state, t.attempts, t.last_error = "connected", 0, None
            if self.targets.get(key) is not t:   # replaced while dialing
                self._close_links_to(t.host, t.port)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            msg = str(exc) or type(exc).__name__
            if "connected to ourselves" in msg:
                t.is_self, t.state, t.last_error = True, "failed", "this is our own address"
            else:
                t.state = "failed"
                t.last_error = msg
                t.retry_at = time.monotonic() + backoff(t.attempts, self.rng)
                t.attempts += 1
                log.info("connect to %s failed (attempt %d, retry in %.0f s): %s", t.address,
                         t.attempts, t.retry_at - time.monotonic(), msg)
        finally:
            self._tasks.pop(key, None)
            self.kick()
