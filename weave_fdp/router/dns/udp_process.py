"""The DNS server process: weaveDNS's UDP threads in a process of their own.

    python -m weave_fdp.router.dns.udp_process --udp-fd 5 --ctl-fd 6 --domain weave.local. --ttl 1

Why a process: in the router's process the UDP thread shares the GIL with the router's
other threads (netlink sessions, the datapath's watchdog, the loop), and on a busy
machine a thread holding the GIL may be descheduled: every query then waits for it.
Measured side by side, the same server code in a process of its own answered with
dnsmasq's p99, and in the router's process with about three times that.

The router binds the UDP sockets (so a bad listen address fails the router's start) and
passes them in (``--udp-fd``), with one end of a control socketpair (``--ctl-fd``,
frames of :mod:`weave_fdp.router.dns.ctl`): snapshots of the records come in, questions
for the upstream resolvers and the counters go out. The main thread reads the control
channel; when it ends (the router stopped, or died: the router holds the only other
end) the threads are stopped and the process exits. The process has a session of its
own: the scheduler weighs it apart from the router (autogroup), as it would a dnsmasq.
"""

from __future__ import annotations

import argparse
import gc
import logging
import socket
import sys
import threading
from typing import Any

from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.dns import ctl
from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.responder import Forward, Responder
from weave_fdp.router.dns.snapshot import SnapshotRef
from weave_fdp.router.dns.udp_thread import UdpThread, guarded_answer, threads_stats

log = logging.getLogger("weave_fdp.router.dns.server")   # the router's name for these lines
SWITCH_INTERVAL_S = 0.0005    # the reader thread's wake-ups hand the GIL back quickly


class ServerProcess:
    def __init__(self, udp: list[socket.socket], ctl_sock: socket.socket, responder: Responder,
                 limiter: SourceLimiter) -> None:
        self.ctl = ctl_sock
        self.ref = responder.ref
        self.rl = RateLimitedLog(log)
        self._log_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._done = threading.Event()
        self._index = {s.fileno(): i for i, s in enumerate(udp)}   # the router knows the sockets by index
        self.threads = [UdpThread(s, responder.fork(), limiter.copy(), answer=self._answer, forward=self._forward,
                                  log=self._log, name=f"dns-udp-{i}") for i, s in enumerate(udp)]

    def _log(self, level: int, cause: str, msg: str, *args: Any) -> None:
        with self._log_lock:
            self.rl.log(level, cause, msg, *args)

    def _answer(self, responder: Responder, data: bytes, src: str, tcp: bool) -> bytes | Forward | None:
        return guarded_answer(responder, data, src, tcp, self._log)

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            with self._send_lock:
                self.ctl.sendall(ctl.frame(msg))
        except OSError:
            self._done.set()              # the router is gone: wind down

    def _forward(self, fwd: Forward, sock: socket.socket, addr: Any) -> None:
        self._send({"t": "fwd", "q": bytes(fwd.request.pack()), "a": [addr[0], addr[1]], "m": fwd.max_size,
                    "i": self._index[sock.fileno()]})

    def _stats_loop(self) -> None:
        last: dict[str, int] = {}
        while not self._done.wait(ctl.STATS_EVERY_S):
            now = threads_stats(self.threads)
            if now != last:
                self._send({"t": "stats", "s": now})
                last = now

    def run(self) -> int:
        reader = ctl.Reader()
        started = False
        try:
            while not self._done.is_set():
                data = self.ctl.recv(1 << 20)
                if not data:
                    break                  # the router closed its end (stop) or died
                swapped = False
                for msg in reader.feed(data):
                    if msg["t"] == "snap":
                        self.ref.current = ctl.snapshot_of(msg)    # the swap: one assignment
                        swapped = True
                if swapped:
                    # the snapshot lives until the next one: moved out of the cyclic
                    # collector's way (with everything older), so a full collection never
                    # walks it while a query waits. It is acyclic: reference counting frees
                    # it when the next one replaces it. The young generations are collected
                    # first (cheap), so no young cyclic garbage is frozen.
                    gc.collect(1)
                    gc.freeze()
                if not started and self.ref.current.generation >= 0:
                    # serve only once the records are here (queries wait in the sockets
                    # meanwhile): an empty snapshot would say NXDOMAIN for every name
                    started = True
                    for t in self.threads:
                        t.start()
                    threading.Thread(target=self._stats_loop, name="dns-stats", daemon=True).start()
        except (OSError, ctl.CtlError) as exc:
            log.error("DNS server process: control channel failed: %s; exiting", exc)
        finally:
            self._done.set()
            for t in self.threads:
                if t.alive:
                    t.stop()
                else:
                    t.sock.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="weave_fdp.router.dns.udp_process")
    p.add_argument("--udp-fd", type=int, action="append", required=True)
    p.add_argument("--ctl-fd", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--ttl", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--burst", type=float, default=1.0)
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=getattr(logging, a.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    udp = [socket.socket(fileno=fd) for fd in a.udp_fd]
    for s in udp:
        s.setblocking(True)
    responder = Responder(SnapshotRef(None), a.domain, a.ttl)
    srv = ServerProcess(udp, socket.socket(fileno=a.ctl_fd), responder, SourceLimiter(a.rate, a.burst))
    return srv.run()


if __name__ == "__main__":
    sys.exit(main())
