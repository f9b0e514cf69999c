"""What an inbound peer may cost before and after its handshake: admission per source,
the budget for frame bodies in flight, failures aggregated per source, logged once per cause."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.errors import ProtocolError
from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.admission import (MAX_HANDSHAKES_PER_SOURCE, SMALL_FRAME, HandshakeAdmission,
                                             InboundFailures, RxBudget, source_of)
from weave_fdp.router.mesh.transport import FrameBudget, _cause, read_frame


def test_one_source_fills_only_its_share_of_handshakes() -> None:
    adm = HandshakeAdmission()
    now = 100.0
    # 64 silent connections from one host, reconnecting as fast as they are refused
    admitted = sum(adm.admit("192.0.2.66", now + i * 0.001) is None for i in range(640))
    assert admitted == MAX_HANDSHAKES_PER_SOURCE
    # a genuine peer elsewhere is admitted at once, and so is the next one
    assert adm.admit("192.0.2.2", now + 0.7) is None
    assert adm.admit("192.0.2.3", now + 0.7) is None


def test_refused_floods_do_not_spend_the_overall_allowance() -> None:
    adm = HandshakeAdmission(rate=1.0, burst=8)   # its 4 admitted spend 4 of the 8
    for i in range(1000):
        adm.admit("192.0.2.66", i * 0.0001)
    assert sum(adm.admit(f"192.0.2.{10 + i}", 0.2) is None for i in range(4)) == 4


def test_pending_handshakes_are_given_back() -> None:
    adm = HandshakeAdmission(per_source=2, source_rate=100, source_burst=100)
    assert adm.admit("a", 0) is None and adm.admit("a", 0) is None
    assert "already pending" in (adm.admit("a", 0) or "")
    adm.done("a")
    assert adm.admit("a", 0) is None
    assert adm.pending == 2


def test_source_rate_refills_with_time() -> None:
    adm = HandshakeAdmission(per_source=100, source_rate=2.0, source_burst=2)
    assert [adm.admit("a", 0.0) is None for _ in range(3)] == [True, True, False]
    assert adm.admit("a", 0.4) is not None      # 0.8 tokens
    assert adm.admit("a", 0.6) is None          # 1.2 tokens


def test_sources_remembered_are_bounded() -> None:
    adm = HandshakeAdmission(max_sources=50, max_pending=10 ** 6, rate=10 ** 6, burst=10 ** 6)
    for i in range(5000):
        if adm.admit(f"10.0.{i // 256}.{i % 256}", 0.0) is None and i % 7:
            adm.done(f"10.0.{i // 256}.{i % 256}")
    assert adm.sources() <= 50 + adm.pending


def test_ipv6_sources_count_per_64() -> None:
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 12 << 20), st.booleans()), max_size=60))
def test_budget_never_exceeds_its_bounds(ops: list[tuple[str, int, bool]]) -> None:
    b = RxBudget(total=32 << 20, per_source=8 << 20)
    held: list[tuple[str, int]] = []
    for src, n, release in ops:
        if release and held:
            b.release(*held.pop(0))
        elif b.try_reserve(src, n):
            held.append((src, n))
        assert b.used <= b.total and all(v <= b.per_source for v in b.by_source.values())
        assert b.used == sum(n for _, n in held)


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=16 << 10)
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def test_frame_limit_is_checked_before_the_body_is_read() -> None:
    async def go() -> None:
        # a peer announces 8 MiB in a handshake frame: refused on the header alone
        with pytest.raises(ProtocolError, match="exceeds limit 1024"):
            await read_frame(_reader(struct.pack("!I", 8 << 20), eof=False), codec.MAX_HELLO)
    asyncio.run(go())


def test_announced_large_frames_wait_for_the_budget() -> None:
    async def go() -> None:
        budget = FrameBudget(RxBudget(total=3 << 20, per_source=2 << 20))
        big = 2 << 20
        # two sources announce 2 MiB each; only the first is granted, the second waits
        first = asyncio.ensure_future(read_frame(_reader(struct.pack("!I", big), eof=False), budget=budget,
                                                 source="a"))
        await asyncio.sleep(0.01)
        assert budget.book.used == big
        second_reader = _reader(struct.pack("!I", big) + bytes(big))
        second = asyncio.ensure_future(read_frame(second_reader, budget=budget, source="b"))
        await asyncio.sleep(0.01)
        assert not second.done() and budget.book.waits == 1 and budget.book.used == big
        first.cancel()                       # the first sender's deadline passes
        assert len(await second) == big      # then the second is read
        assert budget.book.used == 0
        # small frames need no reservation, even when the budget is exhausted
        budget.book.try_reserve("x", 2 << 20)
        payload = bytes(SMALL_FRAME)
        assert await read_frame(_reader(struct.pack("!I", len(payload)) + payload), budget=budget) == payload
    asyncio.run(go())


def test_failures_are_one_row_per_source() -> None:
    f = InboundFailures(max_sources=3, window=120)
    for i in range(239):
        f.add("192.0.2.66", "not a weave-fdp peer (magic b'GET ')", 1000 + i * 0.04)
    f.add("192.0.2.9", "password mismatch: we use a password and the peer has none", 1010)
    rows = f.rows(1011)
    assert [(r.source, r.attempts) for r in rows] == [("192.0.2.9", 1), ("192.0.2.66", 239)]
    assert f.rows(1200) == []                         # forgotten after the window
    for i in range(10):
        f.add(f"10.0.0.{i}", "x", 2000)
    assert len(f.rows(2000)) == 3 and f.total == 250  # bounded


def test_failed_handshakes_are_logged_once_per_cause_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("test.handshakes"), interval=10.0, clock=lambda: now[0])
    reasons = ["frame of 1218 bytes exceeds limit 1024", "frame of 1300 bytes exceeds limit 1024",
               "not a weave-fdp peer (magic b'\\x16\\x03\\x01\\x02')", "not a weave-fdp peer (magic b'GET ')"]
    with caplog.at_level(logging.WARNING, logger="test.handshakes"):
        for i in range(239):            # 239 failures in 10 s from many ports
            now[0] = i * 0.04
            reason = reasons[i % len(reasons)]
            rl.warning(f"handshake from 192.0.2.66: {_cause(reason)}", "failed: %s", reason)
        now[0] = 10.5
        rl.warning(f"handshake from 192.0.2.66: {_cause(reasons[0])}", "failed: %s", reasons[0])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines      # two causes, then the first again after the interval
    assert "more of this kind" in lines[-1]


def test_bytes_queued_to_peers_are_bounded_per_peer_and_overall() -> None:
    from weave_fdp.router.mesh.admission import MAX_WRITE_BUFFER, MAX_WRITE_TOTAL, WRITE_CHECKED, write_overflow

    def total_must_not_be_asked() -> int:
        raise AssertionError("a short queue must not cost a sum over all peers")

    assert write_overflow(WRITE_CHECKED, total_must_not_be_asked) is None
    assert "too slow" in (write_overflow(MAX_WRITE_BUFFER + 1, total_must_not_be_asked) or "")
    # 30 peers that stop reading, 3 MiB queued to each: the total is what stops them
    assert write_overflow(3 << 20, lambda: 30 * (3 << 20)) is not None
    assert write_overflow(3 << 20, lambda: MAX_WRITE_TOTAL) is None
