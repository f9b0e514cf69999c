"""The DNS server on loopback sockets (no privileges): UDP and TCP framing, forwarding to
a tiny upstream (dnslib) with the client's ID, SERVFAIL when none answers, the per-source
rate limit, and garbage that never stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from weave_fdp.router.dns import ctl
from weave_fdp.router.dns.ratelimit import SourceLimiter
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.responder import Responder
from weave_fdp.router.dns.server import UDP_RCVBUF, DnsServer
from weave_fdp.router.dns.upstream import Upstream, parse_resolv_conf

pytestmark = pytest.mark.unit


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TinyUpstream(asyncio.DatagramProtocol):
    """Answers every A question with 192.0.2.80 (UDP)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = DNSRecord.parse(data)
        r = q.reply()
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.80"), ttl=60))
        self.transport.sendto(r.pack(), addr)


def test_parse_resolv_conf_keeps_three_and_never_ourselves() -> None:
    text = """# comment
nameserver 10.0.0.1
nameserver 169.254.53.53
nameserver fe80::1%eth0
nameserver junk
search example.com
nameserver 10.0.0.2 ; trailing
nameserver 10.0.0.3
"""
    assert parse_resolv_conf(text, {"169.254.53.53"}) == ["10.0.0.1", "fe80::1", "10.0.0.2"]


def test_rate_limiter_bounds_each_source_alone() -> None:
    lim = SourceLimiter(rate=10, burst=5)
    assert sum(lim.allow("a", 0.0) for _ in range(100)) == 5
    assert lim.allow("b", 0.0)                         # another source is not affected
    assert sum(lim.allow("a", 1.0) for _ in range(100)) == 5   # refilled, up to the burst
    assert lim.dropped == 190
    assert all(SourceLimiter(rate=0).allow("x", 0.0) for _ in range(1000))


async def udp_ask(port: int, data: bytes, timeout: float = 5.0, retry: float = 1.0) -> bytes:
    """Ask, resending every ``retry`` seconds as resolvers do (a full socket buffer drops)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, d: bytes, addr: Any) -> None:
            if not fut.done():
                fut.set_result(d)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    deadline = loop.time() + timeout
    try:
        while True:
            tr.sendto(data)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(retry, max(0.01, deadline - loop.time())))
            except asyncio.TimeoutError:
                if loop.time() >= deadline:
                    raise
    finally:
        tr.close()


async def tcp_ask(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(struct.pack("!H", len(data)) + data)
        await w.drain()
        (n,) = struct.unpack("!H", await asyncio.wait_for(r.readexactly(2), 5))
        return await r.readexactly(n)
    finally:
        w.close()


def test_server_udp_tcp_forwarding_and_garbage(tmp_path: Path) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        up_port = free_port()
        up_tr, _ = await loop.create_datagram_endpoint(TinyUpstream, local_addr=("127.0.0.1", up_port))
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        recs = Records("02:00:00:00:00:01")
        for i in range(50):
            recs.add("big.weave.local.", f"netns:c{i}", f"10.32.0.{i + 1}", now=1)
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(conf), port=up_port, timeout=1.0), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=0))
        await srv.start()
        try:
            udp = DNSRecord.parse(await udp_ask(port, DNSRecord.question("big.weave.local").pack()))
            assert udp.header.tc == 1 and len(udp.rr) < 50
            tcp = DNSRecord.parse(await tcp_ask(port, DNSRecord.question("big.weave.local").pack()))
            assert tcp.header.tc == 0 and len(tcp.rr) == 50
            q = DNSRecord.question("www.example.org")
            fwd = DNSRecord.parse(await udp_ask(port, q.pack()))
            assert fwd.header.id == q.header.id and str(fwd.rr[0].rdata) == "192.0.2.80"
            for _ in range(300):                             # garbage: FORMERR or silence
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.sendto(os.urandom(40), ("127.0.0.1", port))
                s.close()
            ok = DNSRecord.parse(await udp_ask(port, DNSRecord.question("big.weave.local").pack()))
            assert ok.header.rcode == RCODE.NOERROR
            # the upstream goes away: SERVFAIL within the timeout
            up_tr.close()
            t0 = time.monotonic()
            fail = DNSRecord.parse(await udp_ask(port, DNSRecord.question("gone.example.org").pack(), 10, retry=10))
            assert fail.header.rcode == RCODE.SERVFAIL and time.monotonic() - t0 < 8
            assert srv.stats()["servfail"] >= 1 and srv.stats()["formerr"] + srv.stats()["ignored"] > 0
        finally:
            await srv.stop()
    asyncio.run(run())


def test_flood_from_one_source_is_bounded(tmp_path: Path) -> None:
    async def run() -> None:
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(tmp_path / "none")), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=50, burst=50))
        await srv.start()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            q = DNSRecord.question("web.weave.local").pack()
            t0 = time.monotonic()
            for i in range(1000):
                s.sendto(q, ("127.0.0.1", port))
                if i % 10 == 0:
                    await asyncio.sleep(0.001)   # let the server read (the socket buffer is finite)
            await asyncio.sleep(0.2)
            elapsed = time.monotonic() - t0
            st = srv.stats()
            assert st["udp"] > 300                                  # much of the flood arrived
            assert st["answered"] <= 50 + 50 * elapsed + 1          # burst + rate x time
            assert st["rate_limited"] == st["udp"] - st["answered"]
            s.close()
            # another source is still answered at once
            other = DNSRecord.parse(await udp_ask(port, q))
            assert str(other.rr[0].rdata) == "10.32.0.1"
        finally:
            await srv.stop()
    asyncio.run(run())


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_stop_ends_the_threads_and_closes_every_socket(tmp_path: Path) -> None:
    async def run() -> None:
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        port = free_port()
        before_fds, before_threads = open_fds(), set(threading.enumerate())
        switch = sys.getswitchinterval()
        for _ in range(2):                                   # start, stop, start again on the same port
            srv = DnsServer(Responder(recs), Upstream(path=str(tmp_path / "none")), "127.0.0.1", port,
                            limiter=SourceLimiter(rate=0), udp_threads=2)
            await srv.start()
            threads = srv.threads()
            assert len(threads) == 2 and all(t.daemon for t in threads)
            rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
            for t in srv._udp:           # room for a burst while the thread waits for the CPU
                assert t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(UDP_RCVBUF, rmem_max)
            assert sys.getswitchinterval() <= 0.0005
            ok = DNSRecord.parse(await udp_ask(port, DNSRecord.question("web.weave.local").pack()))
            assert str(ok.rr[0].rdata) == "10.32.0.1"
            await srv.stop()
            assert srv.threads() == [] and not any(t.is_alive() for t in threads)
            await srv.stop()                                  # idempotent
        assert sys.getswitchinterval() == switch                   # put back
        assert set(threading.enumerate()) - before_threads <= {t for t in threading.enumerate()
                                                              if t.name.startswith("asyncio")}
        assert open_fds() - before_fds == set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # nothing holds the port
            s.bind(("127.0.0.1", port))
    asyncio.run(run())


def test_records_change_under_a_running_server(tmp_path: Path) -> None:
    async def run() -> None:
        recs = Records("02:00:00:00:00:01")
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(tmp_path / "none")), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=0))
        await srv.start()
        try:
            q = DNSRecord.question("web.weave.local").pack()
            assert DNSRecord.parse(await udp_ask(port, q)).header.rcode == RCODE.NXDOMAIN
            recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)     # the snapshot is swapped
            assert [str(rr.rdata) for rr in DNSRecord.parse(await udp_ask(port, q)).rr] == ["10.32.0.1"]
            recs.remove(2, container="netns:w")
            assert DNSRecord.parse(await udp_ask(port, q)).header.rcode == RCODE.NXDOMAIN
        finally:
            await srv.stop()
    asyncio.run(run())


def test_bad_input_is_logged_once_per_interval_and_never_stops_a_thread(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(tmp_path / "none")), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=0))
        await srv.start()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            good = DNSRecord.question("web.weave.local").pack()
            for _ in range(100):
                s.sendto(good[:5], ("127.0.0.1", port))           # shorter than a header: ignored
                s.sendto(good[:-3], ("127.0.0.1", port))          # cut in its question: FORMERR
            s.close()
            for _ in range(5):                                    # TCP clients gone mid-message
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(struct.pack("!H", 100) + good[:10])
                await w.drain()
                w.close()
            deadline = time.monotonic() + 10
            while srv.stats()["ignored"] < 100 or srv.stats()["formerr"] < 100:
                assert time.monotonic() < deadline, srv.stats()
                await asyncio.sleep(0.05)
            while "middle of a message" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.05)
            ok = DNSRecord.parse(await udp_ask(port, good))
            assert str(ok.rr[0].rdata) == "10.32.0.1" and len(srv.threads()) == 1
        finally:
            await srv.stop()
        lines = [r.getMessage() for r in caplog.records if r.name.endswith("dns.server")]
        assert sum("shorter than a DNS header" in m for m in lines) == 1, lines
        assert sum("does not parse" in m for m in lines) == 1, lines
        assert sum("middle of a message" in m for m in lines) == 1, lines
    caplog.set_level("INFO")
    asyncio.run(run())


def test_a_bug_costs_one_answer_not_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(tmp_path / "none")), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=0))
        await srv.start()
        try:
            def boom(*a: Any, **kw: Any) -> None:
                raise RuntimeError("a bug")
            with monkeypatch.context() as m:
                m.setattr(Responder, "_local", boom)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(DNSRecord.question("web.weave.local").pack(), ("127.0.0.1", port))
                deadline = time.monotonic() + 10
                while srv.stats()["errors"] < 1:
                    assert time.monotonic() < deadline, srv.stats()
                    await asyncio.sleep(0.05)
            ok = DNSRecord.parse(await udp_ask(port, DNSRecord.question("web.weave.local").pack()))
            assert str(ok.rr[0].rdata) == "10.32.0.1" and len(srv.threads()) == 1
        finally:
            await srv.stop()
    asyncio.run(run())


async def wait_for(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def test_the_server_process_answers_follows_the_records_forwards_and_ends(tmp_path: Path) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        up_port = free_port()
        up_tr, _ = await loop.create_datagram_endpoint(TinyUpstream, local_addr=("127.0.0.1", up_port))
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        port = free_port()
        before_fds = open_fds()
        srv = DnsServer(Responder(recs), Upstream(path=str(conf), port=up_port, timeout=1.0), "127.0.0.1", port,
                        limiter=SourceLimiter(rate=0), isolate=True)
        await srv.start()
        try:
            proc = srv.process()
            assert proc is not None and srv.threads() == []          # nothing of it in this process
            q = DNSRecord.question("web.weave.local").pack()
            ok = DNSRecord.parse(await udp_ask(port, q))             # served from the first snapshot
            assert [str(rr.rdata) for rr in ok.rr] == ["10.32.0.1"]
            recs.add("web.weave.local.", "netns:w2", "10.32.0.2", now=1)      # shipped to the process

            async def addrs() -> list[str]:
                return sorted(str(rr.rdata) for rr in DNSRecord.parse(await udp_ask(port, q)).rr)
            deadline = time.monotonic() + 10
            while await addrs() != ["10.32.0.1", "10.32.0.2"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            fq = DNSRecord.question("www.example.org")
            fwd = DNSRecord.parse(await udp_ask(port, fq.pack()))    # forwarded by the router
            assert fwd.header.id == fq.header.id and str(fwd.rr[0].rdata) == "192.0.2.80"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(200):
                s.sendto(os.urandom(30), ("127.0.0.1", port))
            s.close()
            await wait_for(lambda: srv.stats()["formerr"] + srv.stats()["ignored"] >= 150, "garbage counted")
            assert srv.stats()["udp_threads"] == 1 and srv.stats()["errors"] == 0
            # the process killed: another one serves, the counters are kept
            queries = srv.stats()["queries"]
            proc.kill()
            await wait_for(lambda: srv.process() is not None and srv.process() is not proc, "a new process")
            assert (await addrs()) == ["10.32.0.1", "10.32.0.2"]
            await wait_for(lambda: srv.stats()["queries"] > queries, "counters kept")
            assert srv.stats()["udp_process_restarts"] == 1
            last = srv.process()
        finally:
            await srv.stop()
            up_tr.close()
        assert last is not None and last.poll() is not None and srv.process() is None   # waited for
        assert open_fds() - before_fds == set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:             # nothing holds the port
            s2.bind(("127.0.0.1", port))
    asyncio.run(run())


def test_a_stalled_process_costs_a_bounded_backlog_and_gets_the_newest_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that stops reading (SIGSTOP) must not make the router queue every snapshot:
    past the backlog only the newest is kept, and it is what the process serves once resumed."""
    from weave_fdp.router.dns import process_link
    monkeypatch.setattr(process_link, "SHIP_BACKLOG_BYTES", 4096)

    async def run() -> None:
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        recs = Records("02:00:00:00:00:01")
        for i in range(100):                       # snapshots of some kilobytes each
            recs.add(f"filler{i}.weave.local.", f"netns:f{i}", f"10.40.0.{i + 1}", now=1)
        port = free_port()
        srv = DnsServer(Responder(recs), Upstream(path=str(conf), port=free_port(), timeout=1.0),
                        "127.0.0.1", port, limiter=SourceLimiter(rate=0), isolate=True)
        await srv.start()
        try:
            proc = srv.process()
            assert proc is not None
            q = DNSRecord.question("web.weave.local").pack()
            assert DNSRecord.parse(await udp_ask(port, q)).header.rcode == RCODE.NXDOMAIN
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                link = srv._link                    # the router's side of the process
                assert link is not None
                sizes = []
                for i in range(400):                # far more than the socket and the backlog hold
                    recs.add("web.weave.local.", f"netns:w{i}", f"10.32.{i // 250}.{i % 250 + 1}", now=1)
                    await asyncio.sleep(0)
                    assert link._writer is not None
                    sizes.append(link._writer.transport.get_write_buffer_size())
                recs.add("last.weave.local.", "netns:last", "10.33.0.1", now=1)     # the newest change
                snap_len = len(ctl.frame(ctl.snap_msg(recs_snapshot(srv))))
                assert max(sizes) <= 4096 + snap_len, (max(sizes), snap_len)
                assert srv.stats()["snapshots_coalesced"] > 0
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 15
            last = DNSRecord.question("last.weave.local").pack()
            while [str(rr.rdata) for rr in DNSRecord.parse(await udp_ask(port, last)).rr] != ["10.33.0.1"]:
                assert time.monotonic() < deadline, "the resumed process serves the newest records"
                await asyncio.sleep(0.1)
            assert srv.process() is proc                # stalled, not replaced
        finally:
            await srv.stop()
    asyncio.run(run())


def recs_snapshot(srv: DnsServer) -> Any:
    return srv.responder.ref.current


def test_the_server_process_freezes_each_snapshot_out_of_the_collectors_way() -> None:
    """After a swap the snapshot (and everything older) is in the permanent generation: a
    full collection never walks it while a query waits."""
    import gc

    from weave_fdp.router.dns.snapshot import Snapshot, SnapshotRef
    from weave_fdp.router.dns.udp_process import ServerProcess

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    ours, theirs = socket.socketpair()
    proc = ServerProcess([udp], theirs, Responder(SnapshotRef(None)), SourceLimiter(rate=0))
    runner = threading.Thread(target=proc.run, daemon=True)
    gc.unfreeze()
    try:
        runner.start()
        recs = Records("02:00:00:00:00:01")
        recs.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
        ours.sendall(ctl.frame(ctl.snap_msg(Snapshot.build(recs.entries(), 7))))
        deadline = time.monotonic() + 10
        while proc.ref.current.generation != 7 or gc.get_freeze_count() == 0:
            assert time.monotonic() < deadline, "the snapshot was not swapped in and frozen"
            time.sleep(0.01)
        ok = DNSRecord.parse(asyncio.run(udp_ask(udp.getsockname()[1], DNSRecord.question("web.weave.local").pack())))
        assert str(ok.rr[0].rdata) == "10.32.0.1"
    finally:
        ours.close()                                   # the process's cue to stop
        runner.join(10)
        gc.unfreeze()
        theirs.close()
    assert not runner.is_alive()
