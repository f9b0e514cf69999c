"""One UDP server thread of weaveDNS: a blocking read-answer-send loop on its own socket.

Why a thread and not the router's asyncio loop: the loop also runs gossip, heartbeats,
the API and the datapath's bookkeeping, and every query waited behind whatever the loop
was doing (a p99 of tens of ms at half of dnsmasq's rate). Here a query costs a
blocking ``recvfrom`` (the GIL is released while it waits), a dict lookup in the
current snapshot's answer cache and a ``sendto``; nothing else is in its way.

Each thread owns its socket (SO_REUSEPORT when there are several), its responder (its
counters), its rate limiter and its counts, so the query path takes no lock and shares
nothing but the records' snapshot (read-only) and its answer cache (atomic dict stores).
Questions for upstream resolvers are handed to the router's loop (``forward``), which
answers them later through this thread's socket: a slow upstream never holds a thread.

Nothing a client sends stops the thread: every failure costs that message, is counted
and logged once per interval (``log``), and the loop goes on. :meth:`UdpThread.stop`
wakes the blocked ``recvfrom`` (``shutdown`` of the socket) and joins the thread.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.responder import HEADER, Forward, Responder

MAX_DATAGRAM = 65535
JOIN_TIMEOUT_S = 5.0

# (level, cause, message, *args): the server's rate-limited log (it serialises threads itself)
LogFn = Callable[..., None]


def guarded_answer(responder: Responder, data: bytes, src: str, tcp: bool, log: LogFn) -> bytes | Forward | None:
    """``responder.handle`` that never raises (a bug costs one answer, counted as ``errors``)
    and logs the cause of a bad query once per interval (through ``log``)."""
    try:
        out = responder.handle(data, tcp=tcp)
    except Exception as exc:
        responder.counts["errors"] += 1
        log(logging.ERROR, f"error {type(exc).__name__}", "DNS: error answering a query from %s: %r", src, exc)
        return None
    why = responder.last_bad
    if why is not None:
        responder.last_bad = None
        # the cause without its numbers: "class 7" and "class 9" are one cause
        log(logging.INFO, "bad query: " + re.sub(r"\d+", "N", why),
            "DNS: bad query from %s: %s (answered FORMERR or ignored)", src, why)
    return out


def threads_stats(threads: list[UdpThread]) -> dict[str, int]:
    """The counters of ``threads`` added up (responders', sockets', rate limiters')."""
    out: dict[str, int] = {}
    for t in threads:
        for d in (t.responder.stats(), t.counts, {"rate_limited": t.limiter.dropped}):
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
    out["udp_threads"] = sum(t.alive for t in threads)
    return out


class UdpThread:
    def __init__(self, sock: socket.socket, responder: Responder, limiter: SourceLimiter, *,
                 answer: Callable[[Responder, bytes, str, bool], bytes | Forward | None],
                 forward: Callable[[Forward, socket.socket, Any], None],
                 log: LogFn, clock: Callable[[], float] = time.monotonic, name: str = "dns-udp") -> None:
        self.sock = sock
        self.responder = responder
        self.limiter = limiter
        self._answer = answer          # the server's guarded answer (counts errors, logs bad queries)
        self._forward = forward        # hands a question to the router loop (thread-safe)
        self._log = log
        self.clock = clock
        self.counts = {"udp": 0, "send_dropped": 0}
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Wake the thread from ``recvfrom``, wait for it, close the socket."""
        self._stopping = True
        try:
            # on Linux, shutdown of a UDP socket wakes a blocked recvfrom (it returns b"");
            # it also says ENOTCONN for an unconnected one, which is expected here
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(JOIN_TIMEOUT_S)
        self.sock.close()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        recv, cached, counts = self.sock.recvfrom, self.responder.cached, self.counts
        allow, limited = self.limiter.allow, self.limiter.rate > 0
        while not self._stopping:
            try:
                data, addr = recv(MAX_DATAGRAM)
            except OSError as exc:      # e.g. ICMP errors queued on the socket: keep serving
                if self._stopping:
                    return
                self._log(logging.INFO, f"udp {type(exc).__name__}", "DNS: UDP socket error: %s", exc)
                continue
            if self._stopping:
                return
            counts["udp"] += 1
            try:
                if limited and not allow(addr[0], self.clock()):
                    self._log(logging.WARNING, f"flood {addr[0]}", "DNS: %s sends more than %g queries/s; the excess is dropped",
                              addr[0], self.limiter.rate)
                    continue
                # the hot path: a question asked before is answered from the snapshot's cache
                out = cached(data) if len(data) >= HEADER else None
                if out is None:
                    out = self._answer(self.responder, data, addr[0], False)
                    if isinstance(out, Forward):
                        self._forward(out, self.sock, addr)
                        continue
                    if out is None:
                        continue
                send_udp(self.sock, out, addr, counts, self._log)
            except Exception as exc:   # a bug must cost one answer, never the thread
                self.responder.counts["errors"] += 1
                self._log(logging.ERROR, f"error {type(exc).__name__}", "DNS: error answering a query from %s: %r", addr[0], exc)


def send_udp(sock: socket.socket, data: bytes, addr: Any, counts: dict[str, int], log: LogFn) -> None:
    """Send without blocking: a full send buffer is a loss, and the client retries."""
    try:
        sock.sendto(data, socket.MSG_DONTWAIT, addr)
    except (BlockingIOError, InterruptedError):
        counts["send_dropped"] += 1
    except OSError as exc:
        log(logging.INFO, f"udp send {type(exc).__name__}", "DNS: cannot answer %s over UDP: %s", addr[0], exc)
