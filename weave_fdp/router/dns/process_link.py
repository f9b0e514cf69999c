"""The router's side of the DNS server process (:mod:`weave_fdp.router.dns.udp_process`).

Starts the process with the UDP sockets the router bound, ships it a snapshot of the
records after every change, takes its questions for the upstream resolvers (``on_forward``,
answered through the router's copy of the same socket) and its counters. A process that
dies is started again (after RESTART_S, doubled while it keeps dying young, up to
RESTART_MAX_S; its counters are kept), and said so in the log.
:meth:`stop` closes the control channel (the process exits on its own), waits for it,
kills it if it does not go.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from dnslib import DNSRecord

from weave_fdp.router.dns import ctl
from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.responder import Forward, Responder
from weave_fdp.router.dns.snapshot import Snapshot

log = logging.getLogger("weave_fdp.router.dns.server")

RESTART_S = 1.0
RESTART_MAX_S = 30.0
STEADY_S = 60.0            # a process that lived this long resets the back-off
STOP_WAIT_S = 5.0
# Snapshots a process has not yet read, in bytes, beyond which only the newest is kept: each
# snapshot is whole, so a process that stalls (stopped, swapped out) costs the router at most
# this much plus one snapshot, and gets the current records when it reads again.
SHIP_BACKLOG_BYTES = 1 << 20

OnForward = Callable[[Forward, socket.socket, Any], None]


class ProcessLink:
    def __init__(self, socks: list[socket.socket], responder: Responder, limiter: SourceLimiter,
                 on_forward: OnForward) -> None:
        self.socks = socks                 # ours too: forwarded answers leave through them
        self.responder = responder
        self.limiter = limiter
        self.on_forward = on_forward
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._delay = RESTART_S
        self._started_at = 0.0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: Snapshot | None = None          # newest snapshot held back by the backlog
        self._drainer: asyncio.Task[None] | None = None
        self.coalesced = 0                              # snapshots replaced by a newer one unsent
        self._stopping = False
        self._stats: dict[str, int] = {}     # the running process's counters
        self._past: dict[str, int] = {}      # those of processes that died

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "weave_fdp.router.dns.udp_process", "--ctl-fd", str(child.fileno()),
                "--domain", self.responder.domain, "--ttl", str(self.responder.ttl),
                "--rate", repr(self.limiter.rate), "--burst", repr(self.limiter.burst),
                "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
        for s in self.socks:
            argv += ["--udp-fd", str(s.fileno())]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=[child.fileno(), *(s.fileno() for s in self.socks)],
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            parent.close()
            raise
        finally:
            child.close()                  # the process holds the only other end: its death is our EOF
        self._started_at = time.monotonic()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._stats = {}
        if self._ship not in self.responder.ref.on_swap:
            self.responder.ref.on_swap.append(self._ship)
        self._ship(self.responder.ref.current)
        self._task = asyncio.get_running_loop().create_task(self._read(reader))

    def _ship(self, snap: Snapshot) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        if self._drainer is not None or w.transport.get_write_buffer_size() > SHIP_BACKLOG_BYTES:
            if self._pending is not None:
                self.coalesced += 1
            self._pending = snap
            if self._drainer is None:
                self._drainer = asyncio.get_running_loop().create_task(self._ship_when_drained(w))
            return
        w.write(ctl.frame(ctl.snap_msg(snap)))

    async def _ship_when_drained(self, w: asyncio.StreamWriter) -> None:
        """Wait for the process to read its backlog, then send the newest snapshot only."""
        try:
            await w.drain()
        except (OSError, ConnectionError):
            return                                      # the process ended: _read restarts it
        finally:
            self._drainer = None
        snap, self._pending = self._pending, None
        if snap is not None and w is self._writer:
            self._ship(snap)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        frames = ctl.Reader()
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                for msg in frames.feed(data):
                    if msg["t"] == "stats" and isinstance(msg.get("s"), dict):
                        self._stats = {str(k): int(v) for k, v in msg["s"].items()}
                    elif msg["t"] == "fwd":
                        self._forward(msg)
        except (OSError, ctl.CtlError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.error("DNS server process: bad control frame: %r", exc)
        if self._stopping:
            return
        # the process died (or spoke nonsense): keep its counters, start another
        if time.monotonic() - self._started_at >= STEADY_S:
            self._delay = RESTART_S
        await self._end_process()
        code = self.proc.poll() if self.proc is not None else None
        log.error("DNS server process %s ended (exit %s); starting another in %g s",
                  self.proc.pid if self.proc else "?", code, self._delay)
        for k, v in self._stats.items():
            if k != "udp_threads":
                self._past[k] = self._past.get(k, 0) + v
        self._stats = {}
        while not self._stopping:
            await asyncio.sleep(self._delay)
            self._delay = min(RESTART_MAX_S, self._delay * 2)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self.start()
                return
            except OSError as exc:
                log.error("DNS server process cannot start: %s; trying again in %g s", exc, self._delay)

    def _forward(self, msg: dict[str, Any]) -> None:
        try:
            fwd = Forward(DNSRecord.parse(msg["q"]), int(msg["m"]))
            sock, addr = self.socks[int(msg["i"])], (str(msg["a"][0]), int(msg["a"][1]))
        except Exception as exc:     # dnslib raises several types; a bug costs this question
            log.error("DNS server process sent a question that does not parse: %r", exc)
            return
        self.on_forward(fwd, sock, addr)

    async def _end_process(self) -> None:
        drainer, self._drainer, self._pending = self._drainer, None, None
        if drainer is not None and drainer is not asyncio.current_task():
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        proc = self.proc
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("DNS server process %d did not exit in %g s; killing it", proc.pid, STOP_WAIT_S)
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def stop(self) -> None:
        """End the process (control channel closed, waited for, killed if it lingers)."""
        self._stopping = True
        if self._ship in self.responder.ref.on_swap:
            self.responder.ref.on_swap.remove(self._ship)
        await self._end_process()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, int]:
        out = dict(self._past)
        for k, v in self._stats.items():
            out[k] = out.get(k, 0) + v
        out["udp_threads"] = self._stats.get("udp_threads", 0) if self.alive else 0
        out["snapshots_coalesced"] = self.coalesced
        return out
