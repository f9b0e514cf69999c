"""weaveDNS on real sockets: UDP and TCP on the router's asyncio loop.

The responder decides every answer; this module only frames messages (TCP's
2-byte length prefix), bounds what one source may cost (per-source rate limit,
limits on TCP clients and on forwards in flight), forwards upstream, and logs each
cause of trouble once per interval (never per packet). Nothing a client sends can
stop the server: every failure is counted, logged that way and survived.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from dnslib import DNSRecord

from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.responder import Forward, Responder
from weave_fdp.router.dns.upstream import Upstream

log = logging.getLogger(__name__)

TCP_IDLE_S = 10.0          # a TCP client silent this long is closed
UDP_BATCH = 64             # datagrams read per wake-up (fewer trips through the event loop)
MAX_TCP_CLIENTS = 128
MAX_FORWARDS = 256         # upstream questions in flight; beyond, SERVFAIL at once


def _socket(kind: int, host: str, port: int, device: str | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if device:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.responder = responder
        self.upstream = upstream
        self.host, self.port, self.device = host, port, device
        self.limiter = limiter or SourceLimiter()
        self.clock = clock
        self.rl = RateLimitedLog(log)
        self._udp: socket.socket | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tcp_clients = 0
        self.forwards = 0
        self.counts = {"udp": 0, "tcp": 0, "rate_limited": 0, "servfail": 0, "errors": 0, "send_dropped": 0}

    async def start(self) -> None:
        """Bind UDP and TCP ``host:port`` (OSError when the address is not ours or taken)."""
        loop = asyncio.get_running_loop()
        udp = _socket(socket.SOCK_DGRAM, self.host, self.port, self.device)
        try:
            tcp = _socket(socket.SOCK_STREAM, self.host, self.port, self.device)
        except OSError:
            udp.close()
            raise
        try:
            self._tcp = await asyncio.start_server(self._tcp_client, sock=tcp)
        except OSError:
            udp.close()
            tcp.close()
            raise
        # UDP straight on the socket: each wake-up drains up to UDP_BATCH datagrams (asyncio's
        # datagram transport reads one per trip through the loop)
        self._udp = udp
        loop.add_reader(udp.fileno(), self._drain_udp)

    async def stop(self) -> None:
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {**self.responder.stats(), **self.counts, "rate_limited": self.limiter.dropped,
                "tcp_clients": self.tcp_clients, "forwards_in_flight": self.forwards}

    # ------------------------------------------------------------ one message

    def _answer(self, data: bytes, src: str, tcp: bool) -> bytes | Forward | None:
        try:
            out = self.responder.handle(data, tcp=tcp)
        except Exception as exc:       # a bug must cost one answer, not the server
            self.counts["errors"] += 1
            self.rl.error(f"error {type(exc).__name__}", "DNS: error answering a query from %s: %r", src, exc)
            return None
        why = self.responder.last_bad
        if why is not None:
            self.responder.last_bad = None
            # the cause without its numbers: "class 7" and "class 9" are one cause
            self.rl.info("bad query: " + re.sub(r"\d+", "N", why),
                         "DNS: bad query from %s: %s (answered FORMERR or ignored)", src, why)
        return out

    async def _forwarded(self, fwd: Forward, tcp: bool) -> bytes:
        if self.forwards >= MAX_FORWARDS:
            self.rl.warning("forward limit", "DNS: %d upstream questions in flight; answering SERVFAIL",
                            self.forwards)
            return self._servfail(fwd.request)
        self.forwards += 1
        try:
            answer = await self.upstream.forward(fwd.request, tcp=tcp)
        finally:
            self.forwards -= 1
        if answer is None:
            servers = self.upstream.servers()
            self.rl.warning("no upstream", "DNS: no upstream answered for %s (servers: %s); SERVFAIL",
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

    # ------------------------------------------------------------ UDP

    def _drain_udp(self) -> None:
        """Read what is there (up to UDP_BATCH); a repeated question is answered from the
        responder's cache right here (the hot path), the rest by :meth:`_udp_query`."""
        sock = self._udp
        if sock is None:
            return
        recv, cached, allow = sock.recvfrom, self.responder.cached, self.limiter.allow
        limited = self.limiter.rate > 0
        for _ in range(UDP_BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:       # e.g. ICMP errors queued on the socket: keep serving
                self.rl.info(f"udp {type(exc).__name__}", "DNS: UDP socket error: %s", exc)
                continue
            self.counts["udp"] += 1
            if limited and not allow(addr[0], self.clock()):
                self._flood(addr[0])
                continue
            out = cached(data) if len(data) >= 12 else None
            if out is not None:
                self._send_udp(out, addr)
            else:
                self._udp_query(data, addr)

    def _flood(self, src: str) -> None:
        self.rl.warning(f"flood {src}", "DNS: %s sends more than %g queries/s; the excess is dropped",
                        src, self.limiter.rate)

    def _send_udp(self, data: bytes, addr: Any) -> None:
        if self._udp is None:
            return
        try:
            self._udp.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.counts["send_dropped"] += 1    # the send buffer is full: as a loss, the client retries
        except OSError as exc:
            self.rl.info(f"udp send {type(exc).__name__}", "DNS: cannot answer %s over UDP: %s", addr[0], exc)

    def on_datagram(self, data: bytes, addr: Any) -> None:
        """One datagram from ``addr`` (rate limit, then :meth:`_udp_query`)."""
        self.counts["udp"] += 1
        if not self.limiter.allow(addr[0], self.clock()):
            self._flood(addr[0])
            return
        self._udp_query(data, addr)

    def _udp_query(self, data: bytes, addr: Any) -> None:
        out = self._answer(data, addr[0], tcp=False)
        if isinstance(out, Forward):
            self._spawn(self._udp_forward(out, addr))
        elif out is not None:
            self._send_udp(out, addr)

    async def _udp_forward(self, fwd: Forward, addr: Any) -> None:
        self._send_udp(await self._forwarded(fwd, tcp=False), addr)

    # ------------------------------------------------------------ TCP

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?",)
        src = str(peer[0])
        if self.tcp_clients >= MAX_TCP_CLIENTS:
            self.rl.warning("tcp clients", "DNS: %d TCP clients already; closing %s", self.tcp_clients, src)
            writer.close()
            return
        self.tcp_clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S))
                data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_S)
                self.counts["tcp"] += 1
                if not self.limiter.allow(src, self.clock()):
                    self._flood(src)
                    return                     # closing its TCP connection
                out = self._answer(data, src, tcp=True)
                if isinstance(out, Forward):
                    out = await self._forwarded(out, tcp=True)
                if out is None:
                    return                     # nothing to say to this message: drop the connection
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self.tcp_clients -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
