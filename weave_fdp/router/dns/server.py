"""weaveDNS on real sockets: UDP in a process (or threads) of its own, TCP on the router's loop.

The responder decides every answer; this module only frames messages (TCP's 2-byte
length prefix), bounds what one source may cost (per-source rate limit, limits on TCP
clients and on forwards in flight), forwards upstream, and logs each cause of trouble
once per interval (never per packet). Nothing a client sends can stop the server: every
failure is counted, logged that way and survived.

UDP, the hot path, is answered by :class:`~weave_fdp.router.dns.udp_thread.UdpThread` s
(one per socket; several share the port with SO_REUSEPORT) from the records' snapshot,
never on the loop: in the DNS server process (``isolate``, what the router runs:
:mod:`~weave_fdp.router.dns.udp_process`) or in this process. The loop keeps what may
wait: forwarding to the upstream resolvers (the answer is sent through our copy of the
UDP socket) and TCP, the fallback for truncated answers, whose connection set-up costs
more than the loop's latency.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dnslib import DNSRecord

from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.dns.process_link import ProcessLink
from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.responder import Forward, Responder
from weave_fdp.router.dns.udp_thread import UdpThread, guarded_answer, send_udp, threads_stats
from weave_fdp.router.dns.upstream import Upstream

log = logging.getLogger(__name__)

TCP_IDLE_S = 10.0          # a TCP client silent this long is closed
MAX_TCP_CLIENTS = 128
MAX_FORWARDS = 256         # upstream questions in flight; beyond, SERVFAIL at once
UDP_THREADS = 1            # UDP server threads (each with its own SO_REUSEPORT socket)
# The GIL is handed to a waiting thread after this long at most (Python's default is 5 ms):
# a query arriving while another thread of the router runs Python waits for it, and that
# wait is the tail of the latency. Lowered (never raised) while the server runs.
SWITCH_INTERVAL_S = 0.0005
# The UDP sockets' receive buffer (bytes; the kernel doubles it for its bookkeeping). At the
# default (net.core.rmem_default, 208 KiB: about 270 queries, each costing a ~768-byte
# buffer) a server descheduled for 10 ms at 30,000 queries/s drops queries, which the
# client asks again only after its timeout (seconds); queued, they are answered late by
# milliseconds. Not more: a server slower than the load for a while keeps a standing queue
# as long as the buffer, and every answer waits behind it (2 MiB with the doubling, about
# 2,700 queries: 0.1 s at 25,000 queries/s, far under a client's timeout). Set with
# SO_RCVBUFFORCE (the router runs as root), else SO_RCVBUF (capped at net.core.rmem_max).
UDP_RCVBUF = 1 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)   # Linux's value; Python names it from 3.12


class _SwitchInterval:
    """The process-wide GIL switch interval, lowered while any server runs (counted: a
    process may run several, as tests do) and put back when the last one stops."""

    users = 0
    saved: float | None = None

    @classmethod
    def acquire(cls) -> None:
        cls.users += 1
        if cls.users == 1 and sys.getswitchinterval() > SWITCH_INTERVAL_S:
            cls.saved = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)

    @classmethod
    def release(cls) -> None:
        cls.users = max(0, cls.users - 1)
        if cls.users == 0 and cls.saved is not None:
            sys.setswitchinterval(cls.saved)
            cls.saved = None


def _grow_rcvbuf(s: socket.socket, size: int) -> None:
    """Receive buffer of ``size`` bytes, beyond net.core.rmem_max when we may (CAP_NET_ADMIN)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)   # capped by the kernel, never refused


def _socket(kind: int, host: str, port: int, device: str | None, reuseport: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart while clients linger
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if device:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        if kind == socket.SOCK_DGRAM:
            _grow_rcvbuf(s, UDP_RCVBUF)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
            s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class DnsServer:
    def __init__(self, responder: Responder, upstream: Upstream, host: str, port: int = 53, *,
                 device: str | None = None, limiter: SourceLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic, udp_threads: int = UDP_THREADS,
                 isolate: bool = False) -> None:
        self.responder = responder      # used on the loop (TCP, forwarded answers); threads fork their own
        self.upstream = upstream
        self.host, self.port, self.device = host, port, device
        self.limiter = limiter or SourceLimiter()   # TCP's; each UDP thread gets one alike
        self.clock = clock
        self.udp_threads = max(1, udp_threads)
        self.isolate = isolate          # UDP threads in a process of their own (the router's choice)
        self._link: ProcessLink | None = None
        self._running = False
        self.rl = RateLimitedLog(log)
        self._log_lock = threading.Lock()   # the threads share one log (only bad input takes it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[UdpThread] = []
        self._retired: list[UdpThread] = []  # stopped threads: their counts still add up in stats()
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._switch = False            # holds _SwitchInterval
        self.tcp_clients = 0
        self.forwards = 0
        self.counts = {"udp": 0, "tcp": 0, "servfail": 0, "send_dropped": 0}

    async def start(self) -> None:
        """Bind UDP and TCP ``host:port`` (OSError when the address is not ours or taken),
        then start the UDP threads."""
        self._loop = asyncio.get_running_loop()
        many = self.udp_threads > 1
        socks: list[socket.socket] = []
        try:
            for _ in range(self.udp_threads):
                socks.append(_socket(socket.SOCK_DGRAM, self.host, self.port, self.device, reuseport=many))
            tcp = _socket(socket.SOCK_STREAM, self.host, self.port, self.device)
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, sock=tcp)
            except OSError:
                tcp.close()
                raise
        except OSError:
            for s in socks:
                s.close()
            raise
        self._running = True
        if self.isolate:
            self._link = ProcessLink(socks, self.responder, self.limiter, self._start_forward)
            try:
                await self._link.start()
            except OSError:
                await self.stop()          # closes the sockets and TCP
                raise
            return
        _SwitchInterval.acquire()
        self._switch = True
        for i, s in enumerate(socks):
            t = UdpThread(s, self.responder.fork(), self.limiter.copy(), answer=self._answer,
                          forward=self._hand_over, log=self._log, clock=self.clock, name=f"dns-udp-{i}")
            self._udp.append(t)
            t.start()

    async def stop(self) -> None:
        """Stop the threads (joined, sockets closed) or the process (waited for), TCP and
        forwards in flight; idempotent."""
        self._running = False
        link = self._link                # kept after stop: its counters stay in stats()
        if link is not None and link.socks:
            await link.stop()
            for s in link.socks:
                s.close()
            link.socks = []
        threads, self._udp = self._udp, []
        if threads:
            await asyncio.to_thread(lambda: [t.stop() for t in threads])
            self._retired += threads
        if self._switch:
            _SwitchInterval.release()
            self._switch = False
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def threads(self) -> list[threading.Thread]:
        """The UDP server threads running in this process now (tests check none is left after stop)."""
        return [t.thread for t in self._udp if t.alive]

    def process(self) -> subprocess.Popen[bytes] | None:
        """The DNS server process, when it runs (``isolate``)."""
        return self._link.proc if self._link is not None and self._link.alive else None

    def stats(self) -> dict[str, Any]:
        if self._link is not None:
            udp = self._link.stats()
        else:
            udp = threads_stats(self._udp + self._retired)
            udp["udp_threads"] = len(self.threads())
        out: dict[str, Any] = dict(self.responder.stats())      # the loop's (TCP) answers
        for part in (udp, self.counts, {"rate_limited": self.limiter.dropped}):
            for k, v in part.items():
                if k != "udp_threads":
                    out[k] = out.get(k, 0) + v
        ref = self.responder.ref
        return {**out, "tcp_clients": self.tcp_clients, "forwards_in_flight": self.forwards,
                "snapshots_built": ref.built, "snapshot_changes_coalesced": ref.coalesced,
                "udp_threads": udp.get("udp_threads", 0), "udp_process": self._link is not None,
                "udp_process_pid": proc.pid if (proc := self.process()) is not None else None,
                "udp_process_restarts": self._link.restarts if self._link is not None else 0}

    def _log(self, level: int, cause: str, msg: str, *args: Any) -> None:
        """The rate-limited log, from any thread (only trouble comes here, never an answer)."""
        with self._log_lock:
            self.rl.log(level, cause, msg, *args)

    # ------------------------------------------------------------ one message

    def _answer(self, responder: Responder, data: bytes, src: str, tcp: bool) -> bytes | Forward | None:
        return guarded_answer(responder, data, src, tcp, self._log)

    async def _forwarded(self, fwd: Forward, tcp: bool) -> bytes:
        if self.forwards >= MAX_FORWARDS:
            self._log(logging.WARNING, "forward limit", "DNS: %d upstream questions in flight; answering SERVFAIL",
                            self.forwards)
            return self._servfail(fwd.request)
        self.forwards += 1
        try:
            answer = await self.upstream.forward(fwd.request, tcp=tcp)
        finally:
            self.forwards -= 1
        if answer is None:
            servers = self.upstream.servers()
            self._log(logging.WARNING, "no upstream", "DNS: no upstream answered for %s (servers: %s); SERVFAIL",
                            str(fwd.request.q.qname), ", ".join(servers) or "none in resolv.conf")
            return self._servfail(fwd.request)
        if len(answer) > fwd.max_size:       # the client's UDP buffer cannot take it: TC, retry over TCP
            reply = self.responder.reply_to(fwd.request)
            reply.header.aa = 0
            reply.header.tc = 1
            return bytes(reply.pack())
        return answer

    def _servfail(self, req: DNSRecord) -> bytes:
        self.counts["servfail"] += 1
        return self.responder.servfail(req)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ UDP forwards (on the loop)

    def _hand_over(self, fwd: Forward, sock: socket.socket, addr: Any) -> None:
        """From a UDP thread: forward ``fwd`` on the loop, answer through ``sock``."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._start_forward, fwd, sock, addr)
        except RuntimeError:            # the loop is closing: the client retries elsewhere
            pass

    def _start_forward(self, fwd: Forward, sock: socket.socket, addr: Any) -> None:
        if self._running:                # not after stop
            self._spawn(self._udp_forward(fwd, sock, addr))

    async def _udp_forward(self, fwd: Forward, sock: socket.socket, addr: Any) -> None:
        answer = await self._forwarded(fwd, tcp=False)
        if sock.fileno() >= 0:           # the thread's socket, unless the server stopped meanwhile
            send_udp(sock, answer, addr, self.counts, self._log)

    # ------------------------------------------------------------ TCP

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?",)
        src = str(peer[0])
        if self.tcp_clients >= MAX_TCP_CLIENTS:
            self._log(logging.WARNING, "tcp clients", "DNS: %d TCP clients already; closing %s", self.tcp_clients, src)
            writer.close()
            return
        self.tcp_clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        n = 0
        try:
            while True:
                n = 0
                (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S))
                data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_S)
                self.counts["tcp"] += 1
                if not self.limiter.allow(src, self.clock()):
                    self._log(logging.WARNING, f"flood {src}", "DNS: %s sends more than %g queries/s; the excess is dropped",
                                    src, self.limiter.rate)
                    return                     # closing its TCP connection
                out = self._answer(self.responder, data, src, tcp=True)
                if isinstance(out, Forward):
                    out = await self._forwarded(out, tcp=True)
                if out is None:
                    return                     # nothing to say to this message: drop the connection
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except asyncio.IncompleteReadError as exc:
            if n or exc.partial:           # closed in the middle of a message (between them is a goodbye)
                self._log(logging.INFO, "tcp truncated",
                          "DNS: TCP client %s closed in the middle of a message (%d of %d bytes); dropped",
                          src, len(exc.partial), exc.expected if n == 0 else n)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self.tcp_clients -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
