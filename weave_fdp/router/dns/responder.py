"""Answer one DNS message (dnslib is the codec): the rules of docs/DNS.md, no sockets.

    r = Responder(records, domain="weave.local.", ttl=1)
    out = r.handle(data, tcp=False)   # bytes to send, None (say nothing) or Forward

Rules: names in the domain are answered from the records, case-insensitively, with
every live address in a random order; a known name asked for another type gets
NOERROR with no answer; an unknown name in the domain NXDOMAIN; a single label is
looked up in the domain; PTR of a known address names its current owner; anything
else is a :class:`Forward` for the upstream resolvers. Over UDP a reply fits the
client's EDNS buffer (512 without EDNS): answers that do not fit are left out and TC
is set; over TCP it is complete. A message that does not parse gets FORMERR when its
header can be echoed, else nothing; responses (QR set) are never answered.

Answers come from the current :class:`~weave_fdp.router.dns.snapshot.Snapshot` of the
records (read once per message, never the records themselves), so a responder may run
in a server thread while the router changes the records. They are cached in that
snapshot by the request bytes after the ID (the name as asked, type, class, flags and
EDNS buffer size: so a repeated question costs a dict lookup and a 2-byte patch), a few
shuffled variants each, served in turn; a new snapshot starts with an empty cache.

Each server thread has a responder of its own (:meth:`Responder.fork`): counters and
the cause of the last bad message belong to one thread, the snapshot is shared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dnslib import EDNS0, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSLabel, DNSRecord

from weave_fdp.router.dns.names import DEFAULT_DOMAIN, DEFAULT_TTL, fqdn, in_domain, reverse_to_ipv4
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.snapshot import Snapshot, SnapshotRef

UDP_MIN = 512          # bytes a UDP reply may always use (RFC 1035)
TCP_MAX = 65535        # bytes of a TCP reply (its length prefix)
EDNS_SIZE = 4096       # the buffer size we announce
HEADER = 12
CACHE_MAX = 4096       # cached questions
VARIANTS = 6           # shuffled orders cached per question with several answers
CLASS_IN, CLASS_ANY = 1, 255


@dataclass
class Forward:
    """A question for the upstream resolvers; ``max_size``: what the client can take."""

    request: DNSRecord
    max_size: int


class Responder:
    def __init__(self, records: Records | SnapshotRef | None, domain: str = DEFAULT_DOMAIN, ttl: int = DEFAULT_TTL,
                 rng: random.Random | None = None) -> None:
        # None: a responder fed snapshots from elsewhere (the DNS server process)
        self.ref = records if isinstance(records, SnapshotRef) else SnapshotRef(records)
        self.records = self.ref.records     # the owner's side (the router loop); answers read self.ref
        self.domain = fqdn(domain).lower()
        self.ttl = ttl
        self.rng = rng or random.Random()
        self._turn = 0        # cached variants are served in turn (each a random order)
        self.counts = {"queries": 0, "answered": 0, "nxdomain": 0, "forwarded": 0, "formerr": 0,
                       "ignored": 0, "truncated": 0, "cache_hits": 0, "errors": 0}
        self.fast_hits = 0                 # answers of cached() (counted apart: it is the hot path)
        self.last_bad: str | None = None   # the cause of the last FORMERR/ignored message (for logs)

    def fork(self) -> Responder:
        """A responder for another thread: the same records, snapshot and rules, counters of its own."""
        return Responder(self.ref, self.domain, self.ttl, random.Random(self.rng.getrandbits(64)))

    # ------------------------------------------------------------ entry point

    def handle(self, data: bytes, *, tcp: bool = False) -> bytes | Forward | None:
        self.counts["queries"] += 1
        data = bytes(data)
        if len(data) < HEADER:
            return self._ignore("shorter than a DNS header")
        snap = self.ref.current          # one read: the whole answer comes from this snapshot
        key = (b"T" if tcp else b"U") + data[2:]
        hit = snap.answers.get(key)
        if hit is not None:
            self.counts["cache_hits"] += 1
            self.counts["answered"] += 1
            self._turn += 1
            return data[:2] + hit[self._turn % len(hit)]
        if data[2] & 0x80:
            return self._ignore("a response, not a query")
        try:
            req = DNSRecord.parse(data)
        except Exception as exc:   # dnslib raises several types on garbage
            return self._formerr(data, f"does not parse ({type(exc).__name__})")
        # dnslib parses names it cannot pack again (compression pointers can build them): the
        # reply echoes the question, so refuse those here
        if any(len(q.qname) > 253 or any(len(l) > 63 for l in q.qname.label) for q in req.questions):
            return self._formerr(data, "a name longer than DNS allows")
        if req.header.opcode != OPCODE.QUERY:
            reply = req.reply()
            reply.header.rcode = RCODE.NOTIMP
            return self._pack_error(reply, f"opcode {req.header.opcode}")
        if len(req.questions) != 1:
            return self._formerr(data, f"{len(req.questions)} questions")
        max_size = TCP_MAX if tcp else self._udp_size(req)
        q = req.q
        qname = str(q.qname)
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            reply = self.reply_to(req)
            reply.header.rcode = RCODE.NOTIMP
            return self._pack_error(reply, f"class {q.qclass}")
        name = qname if qname.rstrip(".").count(".") else f"{qname.rstrip('.')}.{self.domain}"
        if in_domain(name, self.domain) and qname != ".":
            variants = self._local(snap, req, name, q.qtype, max_size)
        else:
            ip = reverse_to_ipv4(qname)
            owner = snap.reverse(ip) if ip is not None and q.qtype in (QTYPE.PTR, QTYPE.ANY) else None
            if owner is None:
                self.counts["forwarded"] += 1
                return Forward(req, max_size)
            reply = self.reply_to(req)
            reply.add_answer(RR(q.qname, QTYPE.PTR, ttl=self.ttl, rdata=PTR(owner)))
            variants = [self._pack(reply, max_size)]
        if len(snap.answers) >= CACHE_MAX:
            snap.answers.clear()
        snap.answers[key] = [v[2:] for v in variants]    # without the ID: each query's is put in front
        self.counts["answered"] += 1
        return self.rng.choice(variants)

    def cached(self, data: bytes) -> bytes | None:
        """The answer to a UDP question asked before (records unchanged), else None: the
        server's fast path, before :meth:`handle` (which counts and answers the rest)."""
        hit = self.ref.current.answers.get(b"U" + data[2:])
        if hit is None:
            return None
        self.fast_hits += 1
        self._turn += 1
        return data[:2] + hit[self._turn % len(hit)]

    def stats(self) -> dict[str, int]:
        c = dict(self.counts)
        for k in ("queries", "answered", "cache_hits"):
            c[k] += self.fast_hits
        return c

    # ------------------------------------------------------------ local names

    def _local(self, snap: Snapshot, req: DNSRecord, name: str, qtype: int, max_size: int) -> list[bytes]:
        addrs = snap.lookup(name)
        reply = self.reply_to(req)
        if not addrs:
            if name.lower() != self.domain and not snap.has_below(name):
                reply.header.rcode = RCODE.NXDOMAIN
                self.counts["nxdomain"] += 1
            return [self._pack(reply, max_size)]
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return [self._pack(reply, max_size)]    # the name exists, not with this type: NOERROR, empty
        qname = req.q.qname
        out = []
        for _ in range(VARIANTS if len(addrs) > 1 else 1):
            order = list(addrs)
            self.rng.shuffle(order)
            r = self.reply_to(req)
            for a in order:
                r.add_answer(RR(qname, QTYPE.A, ttl=self.ttl, rdata=A(a)))
            out.append(self._pack(r, max_size))
        return out

    # ------------------------------------------------------------ building replies

    @staticmethod
    def _udp_size(req: DNSRecord) -> int:
        for rr in req.ar:
            if rr.rtype == QTYPE.OPT:
                return max(UDP_MIN, min(int(rr.rclass), TCP_MAX))
        return UDP_MIN

    def reply_to(self, req: DNSRecord) -> DNSRecord:
        """An empty authoritative reply to ``req`` (EDNS echoed when the client used it)."""
        reply = DNSRecord(DNSHeader(id=req.header.id, qr=1, aa=1, ra=1, rd=req.header.rd), q=req.q)
        if any(rr.rtype == QTYPE.OPT for rr in req.ar):
            reply.add_ar(EDNS0(udp_len=EDNS_SIZE))
        return reply

    def _pack(self, reply: DNSRecord, max_size: int) -> bytes:
        """Packed ``reply``, with as many answers as fit in ``max_size`` (TC set if some did not)."""
        data = bytes(reply.pack())
        if len(data) <= max_size:
            return data
        self.counts["truncated"] += 1
        answers = list(reply.rr)
        lo, hi = 0, len(answers)          # the largest count that fits is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            reply.rr = answers[:mid]
            if len(reply.pack()) <= max_size:
                lo = mid
            else:
                hi = mid
        reply.rr = answers[:lo]
        reply.header.tc = 1
        data = bytes(reply.pack())
        if len(data) > max_size:           # not even the header and question fit
            reply.ar = []
            data = bytes(reply.pack())
        return data

    def servfail(self, req: DNSRecord) -> bytes:
        reply = self.reply_to(req)
        reply.header.aa = 0
        reply.header.rcode = RCODE.SERVFAIL
        return bytes(reply.pack())

    def _pack_error(self, reply: DNSRecord, why: str) -> bytes:
        self.last_bad = why
        self.counts["formerr"] += 1
        return bytes(reply.pack())

    def _formerr(self, data: bytes, why: str) -> bytes:
        """FORMERR echoing the ID and opcode of a message we cannot answer (no question section)."""
        self.last_bad = why
        self.counts["formerr"] += 1
        header = DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, opcode=(data[2] >> 3) & 0xF,
                           rd=data[2] & 1, rcode=RCODE.FORMERR)
        return bytes(DNSRecord(header).pack())

    def _ignore(self, why: str) -> None:
        self.last_bad = why
        self.counts["ignored"] += 1
        return None


def _fuzz_responder() -> Responder:
    from weave_fdp.router.dns.records import Records

    recs = Records("02:00:00:00:00:01")
    for i in range(60):
        recs.add("big.weave.local.", f"netns:c{i}", f"10.32.0.{i + 1}", now=1.0)
    recs.add("web.weave.local.", "netns:web", "10.32.1.1", now=1.0)
    return Responder(recs, rng=random.Random(0))


_FUZZ: Responder | None = None


def handle_query(data: bytes, tcp: bool = False) -> bytes | None:
    """One message in, the bytes the server would send (or None): the fuzzing entry point.

    Uses a fixed responder holding ``web.weave.local.`` and 60 addresses of
    ``big.weave.local.``; what the server would forward upstream gets the SERVFAIL
    it sends when no upstream answers. Never raises on any input.
    """
    global _FUZZ
    if _FUZZ is None:
        _FUZZ = _fuzz_responder()
    if not tcp and len(data) >= HEADER:            # the server's UDP hot path first, as it runs
        hit = _FUZZ.cached(bytes(data))
        if hit is not None:
            return hit
    out = _FUZZ.handle(data, tcp=tcp)
    if isinstance(out, Forward):
        return _FUZZ.servfail(out.request)
    return out


__all__ = ["Forward", "Responder", "handle_query", "DNSLabel"]
