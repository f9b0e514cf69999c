"""The DNS answer rules on messages built with dnslib (no sockets)."""

from __future__ import annotations

import random

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.router.dns.records import Entry, Records
from weave_fdp.router.dns.responder import Forward, Responder, handle_query

pytestmark = pytest.mark.unit


LOCAL, OTHER = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


@pytest.fixture
def responder() -> Responder:
    r = Records(LOCAL)
    for i in range(5):
        r.add("web.weave.local.", f"netns:w{i}", f"10.32.0.{i + 1}", now=1)
    r.add("db.svc.weave.local.", "netns:db", "10.32.1.1", now=1)
    for i in range(50):
        r.merge([Entry("big.weave.local.", OTHER, f"netns:b{i}", f"10.32.2.{i + 1}")], now=1)
    return Responder(r, rng=random.Random(7))


def ask(resp: Responder, name: str, qtype: str = "A", *, tcp: bool = False, bufsize: int | None = None) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if bufsize:
        q.add_ar(EDNS0(udp_len=bufsize))
    out = resp.handle(q.pack(), tcp=tcp)
    assert isinstance(out, bytes)
    reply = DNSRecord.parse(out)
    assert reply.header.id == q.header.id and reply.header.qr == 1
    return reply


def addrs(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_every_address_in_every_answer_in_varying_order(responder: Responder) -> None:
    orders = set()
    for _ in range(40):
        a = addrs(ask(responder, "web.weave.local"))
        assert sorted(a) == [f"10.32.0.{i}" for i in range(1, 6)]
        orders.add(tuple(a))
    assert len(orders) > 1


def test_case_single_label_ttl_and_flags(responder: Responder) -> None:
    r = ask(responder, "WeB.wEaVe.LoCaL")
    assert len(addrs(r)) == 5 and r.header.aa == 1 and r.rr[0].ttl == 1
    assert str(r.q.qname) == "WeB.wEaVe.LoCaL."      # the question is echoed as asked
    assert len(addrs(ask(responder, "web"))) == 5


def test_rcodes(responder: Responder) -> None:
    assert ask(responder, "nope.weave.local").header.rcode == RCODE.NXDOMAIN
    mx = ask(responder, "web.weave.local", "MX")
    assert mx.header.rcode == RCODE.NOERROR and not mx.rr
    aaaa = ask(responder, "web.weave.local", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
    assert ask(responder, "svc.weave.local").header.rcode == RCODE.NOERROR   # has names below it
    assert ask(responder, "weave.local").header.rcode == RCODE.NOERROR


def test_ptr_and_forwarding(responder: Responder) -> None:
    r = ask(responder, "1.1.32.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in r.rr] == ["db.svc.weave.local."]
    out = responder.handle(DNSRecord.question("9.9.9.10.in-addr.arpa", "PTR").pack())
    assert isinstance(out, Forward)
    out = responder.handle(DNSRecord.question("example.com").pack())
    assert isinstance(out, Forward) and out.max_size == 512
    fail = DNSRecord.parse(responder.servfail(out.request))
    assert fail.header.rcode == RCODE.SERVFAIL


def test_large_answers_truncate_over_udp_and_are_whole_over_tcp(responder: Responder) -> None:
    udp = ask(responder, "big.weave.local")
    assert udp.header.tc == 1 and 0 < len(udp.rr) < 50
    assert len(udp.pack()) <= 512
    edns = ask(responder, "big.weave.local", bufsize=700)
    assert edns.header.tc == 1 and len(udp.rr) < len(edns.rr) < 50
    raw = responder.handle(DNSRecord(q=DNSQuestion("big.weave.local"), header=DNSHeader(id=5)).pack(), tcp=True)
    tcp = DNSRecord.parse(raw)
    assert tcp.header.tc == 0 and len(tcp.rr) == 50
    big = ask(responder, "big.weave.local", bufsize=4096)
    assert big.header.tc == 0 and len(big.rr) == 50


def test_bad_messages_get_formerr_or_nothing(responder: Responder) -> None:
    assert responder.handle(b"\x01\x02") is None                        # no header
    q = DNSRecord.question("web.weave.local")
    q.header.qr = 1
    assert responder.handle(q.pack()) is None                           # a response
    two = DNSRecord.question("web.weave.local")
    two.add_question(DNSQuestion("db.weave.local"))
    r = DNSRecord.parse(responder.handle(two.pack()))
    assert r.header.rcode == RCODE.FORMERR and r.header.id == two.header.id
    trunc = DNSRecord.question("web.weave.local").pack()[:-3]
    r = DNSRecord.parse(responder.handle(trunc))
    assert r.header.rcode == RCODE.FORMERR


def test_cache_follows_record_changes(responder: Responder) -> None:
    assert len(addrs(ask(responder, "web.weave.local"))) == 5
    responder.records.remove(5, container="netns:w0")
    assert len(addrs(ask(responder, "web.weave.local"))) == 4
    assert responder.counts["cache_hits"] == 0
    ask(responder, "web.weave.local")
    assert responder.counts["cache_hits"] == 1


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    out = handle_query(data)
    assert out is None or isinstance(out, bytes)
    out = handle_query(data, tcp=True)
    assert out is None or isinstance(out, bytes)


@settings(max_examples=200)
@given(st.integers(0, 2**16 - 1), st.binary(min_size=1, max_size=40), st.integers(0, 300))
def test_mutated_queries_never_raise(pos: int, junk: bytes, cut: int) -> None:
    good = bytearray(DNSRecord.question("big.weave.local").pack())
    i = pos % len(good)
    good[i:i + len(junk)] = junk
    out = handle_query(bytes(good[:cut or None]))
    assert out is None or isinstance(out, bytes)
