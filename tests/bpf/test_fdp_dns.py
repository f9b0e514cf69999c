"""weaveDNS answers in the kernel: fdp_from_container on crafted queries (BPF_PROG_TEST_RUN).

The port test runs come in by is a registered container; the fast path holds the
names of a records snapshot (dns_plan.plan_entries, as the router writes them). A
query it can answer comes back rewritten into a reply, redirected out of the port it
came in by, and that reply is the userspace responder's for the same bytes, up to the
order of the answers (both shuffle). Anything else passes through untouched (the
frame the program leaves is the frame it got), counted by reason; garbage never
breaks it.
"""

from __future__ import annotations

import ctypes
import random
import struct

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord

from tests.bpf.fdp_helpers import TEST_RUN_IFINDEX, allow_port, eth, events, ipv4
from weave_fdp.datapath import bpf_syscall, dns_plan
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import build_plan, host_port
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.responder import Responder

OK, SHOT, REDIRECT = 0, 2, 7
TX = "fdp_from_container"
ME, BRIDGE = "02:00:00:00:01:0a", "02:00:00:00:0d:05"
MY_IP, DNS_IP, DOMAIN, TTL = "10.32.1.1", "169.254.53.53", "weave.local.", 7
ETH_P_IP = 0x0800
BRIDGE_IFINDEX = 5
NAMES = {"web.weave.local.": ["10.32.1.5"], "db.weave.local.": ["10.32.2.1", "10.32.2.2", "10.32.2.3"],
         "svc.a.weave.local.": ["10.32.3.1", "10.32.3.2"],
         "big.weave.local.": [f"10.32.4.{i}" for i in range(1, 21)],       # more than the kernel holds
         "other.example.": ["10.32.5.1"],                                  # outside the domain
         "wide.weave.local.": [f"10.32.6.{i}" for i in range(1, 17)]}      # as many as it holds


@pytest.fixture(scope="module")
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    # the bridge is the host's own port: queries go to its MAC
    plan = build_plan(local="p1", short_ids={"p1": 1}, unicast={}, broadcast={}, hop_ips={}, modes={},
                      ports={"vethweplA": ME}, mtu=1450, host=host_port("weave", BRIDGE, [f"{DNS_IP}/32"]))
    d.apply(plan, vxlan_ifindex=100, ifindex={"vethweplA": 11, "weave": BRIDGE_IFINDEX})
    allow_port(d, ME, [MY_IP])
    d.configure_dns(dns_plan.DnsSettings(DNS_IP, 53, 0, 0))
    d.apply_dns(dns_plan.plan_entries(NAMES, DOMAIN, TTL))
    yield d
    d.close()


@pytest.fixture(scope="module")
def responder() -> Responder:
    recs = Records("02:00:00:00:00:01")
    for name, addrs in NAMES.items():
        for i, a in enumerate(addrs):
            recs.add(name, f"netns:{name}{i}", a, now=1.0)
    return Responder(recs, DOMAIN, TTL, rng=random.Random(1))


def query_frame(dns: bytes, *, dport: int = 53, dst: str = DNS_IP, sport: int = 40000,
                dst_mac: str = BRIDGE) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(dns), 0) + dns
    return eth(dst_mac, ME, ETH_P_IP) + ipv4(MY_IP, dst, 17, udp)


def q(name: str, qtype: str = "A", *, edns: int | None = None, rd: bool = True, qid: int = 0x1234) -> bytes:
    rec = DNSRecord.question(name, qtype)
    rec.header.id = qid
    rec.header.rd = int(rd)
    if edns is not None:
        rec.add_ar(EDNS0(udp_len=edns))
    return bytes(rec.pack())


def with_additional(dns: bytes, rr: bytes) -> bytes:
    """``dns`` (no additional record) with ``rr`` as its one additional record."""
    return dns[:10] + b"\x00\x01" + dns[12:] + rr


def stats(dp) -> dict[str, int]:
    return dp.dns_stats()


def run(dp, frame: bytes):
    events(dp)
    before = stats(dp)
    res = bpf_syscall.prog_test_run(dp.prog_fd(TX), frame)
    after = stats(dp)
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return res, events(dp), moved


def reply_of(out: bytes) -> bytes:
    """The DNS message of a reply frame, after checking its Ethernet, IPv4 and UDP headers."""
    assert out[0:6] == abi.mac_bytes(ME) and out[6:12] == abi.mac_bytes(BRIDGE)
    ip = out[14:34]
    ver_ihl, _, tot_len, _, _, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", ip)
    assert (ver_ihl, proto, ttl) == (0x45, 17, abi.DNS_REPLY_TTL)
    assert (src, dst) == (bytes(map(int, DNS_IP.split("."))), bytes(map(int, MY_IP.split("."))))
    assert tot_len == len(out) - 14
    assert ones_sum(ip) == 0xFFFF, "IPv4 header checksum"
    sport, dport, ulen, check = struct.unpack("!HHHH", out[34:42])
    assert (sport, dport, ulen) == (53, 40000, len(out) - 34)
    assert check != 0 and ones_sum(src + dst + struct.pack("!HH", 17, ulen) + out[34:]) == 0xFFFF, "UDP checksum"
    return out[42:]


def ones_sum(data: bytes) -> int:
    """The ones' complement sum of ``data`` as 16-bit big-endian words (0xffff: a valid checksum)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def same_reply(kernel: bytes, user: bytes) -> None:
    """Byte for byte the same message, up to the order of the answers (16 bytes each)."""
    k, u = DNSRecord.parse(kernel), DNSRecord.parse(user)
    assert len(k.rr) == len(u.rr) and len(kernel) == len(user)
    start = len(kernel) - 16 * len(k.rr) - (11 if k.ar else 0)
    end = start + 16 * len(k.rr)
    assert kernel[:start] == user[:start]
    assert kernel[end:] == user[end:]
    chunks = lambda b: sorted(b[i:i + 16] for i in range(start, end, 16))   # noqa: E731
    assert chunks(kernel) == chunks(user)


ANSWERED = [
    ("plain", q("web.weave.local")),
    ("three addresses", q("db.weave.local")),
    ("below a label", q("svc.a.weave.local")),
    ("mixed case (DNS 0x20)", q("WeB.wEaVe.LoCaL")),
    ("recursion not desired", q("db.weave.local", rd=False)),
    ("EDNS", q("db.weave.local", edns=1232)),
    ("EDNS with a small buffer", q("web.weave.local", edns=100)),
    ("EDNS with an option (a cookie, as dig sends)", with_additional(
        q("web.weave.local"), b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08" + bytes(range(8)))),
    ("sixteen addresses", q("wide.weave.local", edns=4096)),
]


@pytest.mark.parametrize("case", ANSWERED, ids=[c[0] for c in ANSWERED])
def test_answered_in_the_kernel_as_userspace_would(dp, responder, case) -> None:
    _name, dns = case
    res, evs, moved = run(dp, query_frame(dns))
    assert (res.retval, evs, moved) == (REDIRECT, [("REDIRECT", 0, "", TEST_RUN_IFINDEX)], {"answered": 1})
    kernel = reply_of(res.data)
    user = responder.handle(dns)
    assert isinstance(user, bytes)
    same_reply(kernel, user)
    rec = DNSRecord.parse(kernel)
    assert rec.header.id == DNSRecord.parse(dns).header.id and rec.header.aa == 1 and rec.header.qr == 1
    assert all(rr.ttl == TTL for rr in rec.rr)


def test_a_query_with_sixteen_addresses_without_edns_is_too_big_for_512_bytes(dp) -> None:
    # 12 + 22 + 16 * 16 = 290: fits; the userspace server answers the same way
    res, _, moved = run(dp, query_frame(q("wide.weave.local")))
    assert res.retval == REDIRECT and moved == {"answered": 1}


def test_order_varies(dp) -> None:
    orders = set()
    for _ in range(40):
        res, _, _ = run(dp, query_frame(q("db.weave.local")))
        orders.add(tuple(str(rr.rdata) for rr in DNSRecord.parse(reply_of(res.data)).rr))
    assert {frozenset(o) for o in orders} == {frozenset(NAMES["db.weave.local."])}
    assert len(orders) >= 3   # 6 orders, 40 draws


def _aaaa_frame() -> bytes:
    return query_frame(q("web.weave.local", "AAAA"))


PASSED = [
    ("unknown name", query_frame(q("nope.weave.local")), "pass_miss"),
    ("name outside the domain", query_frame(q("other.example")), "pass_miss"),
    ("the domain itself", query_frame(q("weave.local")), "pass_miss"),
    ("single label", query_frame(q("web")), "pass_miss"),
    ("more addresses than the kernel holds", query_frame(q("big.weave.local")), "pass_miss"),
    ("AAAA", _aaaa_frame(), "pass_question"),
    ("PTR", query_frame(q("5.1.32.10.in-addr.arpa", "PTR")), "pass_question"),
    ("ANY", query_frame(q("web.weave.local", "ANY")), "pass_question"),
    ("a response", query_frame(bytes(DNSRecord.question("web.weave.local").reply().pack())), "pass_header"),
    ("opcode NOTIFY", query_frame(q("web.weave.local")[:2] + b"\x21\x00" + q("web.weave.local")[4:]),
     "pass_header"),
    ("two questions", query_frame(q("web.weave.local")[:4] + b"\x00\x02" + q("web.weave.local")[6:]
                                  + q("web.weave.local")[12:]), "pass_header"),
    ("trailing bytes", query_frame(q("web.weave.local") + b"xx"), "pass_packet"),
    ("a compression pointer in the question", query_frame(q("web.weave.local")[:12] + b"\xc0\x0c\x00\x01\x00\x01"),
     "pass_name"),
    ("a name running past the message", query_frame(q("web.weave.local")[:12] + b"\x03web\x05wea"), "pass_name"),
    ("an additional record that is no OPT", query_frame(with_additional(
        q("web.weave.local"), b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x01\x02\x03\x04")), "pass_edns"),
    ("an OPT whose length runs past the message", query_frame(with_additional(
        q("web.weave.local"), b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x09")), "pass_edns"),
    ("a name longer than the key", query_frame(q(".".join(["a" * 60] * 3) + ".weave.local")), "pass_name"),
    ("shorter than a DNS header", query_frame(b"\x12\x34\x01"), "pass_packet"),
]


@pytest.mark.parametrize("case", PASSED, ids=[c[0] for c in PASSED])
def test_passed_on_untouched(dp, case) -> None:
    _name, frame, why = case
    res, evs, moved = run(dp, frame)
    assert (res.retval, evs, moved) == (OK, [], {why: 1})
    assert res.data == frame


def test_other_udp_and_other_addresses_are_not_looked_at(dp) -> None:
    for frame in (query_frame(q("web.weave.local"), dport=5353), query_frame(q("web.weave.local"), dst="10.32.1.9"),
                  # not to the host's port: the frame goes where its MAC says, the kernel does not answer
                  query_frame(q("web.weave.local"), dst_mac="02:00:00:00:01:0b")):
        res, _, moved = run(dp, frame)
        assert res.retval == OK and moved == {} and res.data == frame


def test_garbage_never_breaks_it(dp) -> None:
    rng = random.Random(7)
    good = q("db.weave.local", edns=1232)
    for _ in range(300):
        dns = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            dns[rng.randrange(len(dns))] = rng.randrange(256)
        dns = bytes(dns[:rng.randint(0, len(dns))]) if rng.random() < 0.3 else bytes(dns)
        frame = query_frame(dns)
        res, _, moved = run(dp, frame)
        assert res.retval in (OK, REDIRECT), dns.hex()
        if res.retval == OK:
            assert res.data == frame
        else:
            DNSRecord.parse(reply_of(res.data))   # a well-formed reply


def test_off_passes_everything(dp) -> None:
    dp.configure_dns(None)
    try:
        frame = query_frame(q("web.weave.local"))
        res, _, moved = run(dp, frame)
        assert (res.retval, moved, res.data) == (OK, {}, frame)
    finally:
        dp.configure_dns(dns_plan.DnsSettings(DNS_IP, 53, 0, 0))


def test_a_name_deleted_is_no_longer_answered(dp) -> None:
    want = dns_plan.plan_entries(NAMES, DOMAIN, TTL)
    key = dns_plan.wire_key("web.weave.local.")
    dp.apply_dns({k: v for k, v in want.items() if k != key})
    try:
        res, _, moved = run(dp, query_frame(q("web.weave.local")))
        assert (res.retval, moved) == (OK, {"pass_miss": 1})
    finally:
        dp.apply_dns(want)
    assert dp.dns_entries() == want


def test_listen_port_and_address_come_from_the_config(dp) -> None:
    dp.configure_dns(dns_plan.DnsSettings("169.254.9.9", 5353, 0, 0))
    try:
        res, _, moved = run(dp, query_frame(q("web.weave.local")))
        assert (res.retval, moved) == (OK, {})
        res, _, moved = run(dp, query_frame(q("web.weave.local"), dst="169.254.9.9", dport=5353))
        assert (res.retval, moved) == (REDIRECT, {"answered": 1})
        assert struct.unpack("!H", res.data[34:36])[0] == 5353
    finally:
        dp.configure_dns(dns_plan.DnsSettings(DNS_IP, 53, 0, 0))


def test_rate_limit_drops_what_is_over_the_burst(dp) -> None:
    # one query per 100 s, burst 5: five at once pass (answered or not), the sixth is dropped
    interval, burst = dns_plan.rate_settings(0.01, 5.0)
    dp.configure_dns(dns_plan.DnsSettings(DNS_IP, 53, interval, burst))
    try:
        got = [run(dp, query_frame(q("web.weave.local" if i % 2 else "nope.weave.local")))[0].retval
               for i in range(7)]
        assert got[:5] == [OK, REDIRECT, OK, REDIRECT, OK]
        assert got[5:] == [SHOT, SHOT]
        res, _, moved = run(dp, query_frame(q("web.weave.local")))
        assert (res.retval, moved) == (SHOT, {"rate_limited": 1})
    finally:
        dp.configure_dns(dns_plan.DnsSettings(DNS_IP, 53, 0, 0))
    res, _, _ = run(dp, query_frame(q("web.weave.local")))
    assert res.retval == REDIRECT


def test_ttl_and_addresses_follow_the_entries(dp) -> None:
    want = dns_plan.plan_entries({"web.weave.local.": ["10.32.9.9"]}, DOMAIN, 30)
    old = dp.dns_entries()
    dp.apply_dns({**old, **want})
    try:
        res, _, _ = run(dp, query_frame(q("web.weave.local")))
        rec = DNSRecord.parse(reply_of(res.data))
        assert [(str(rr.rdata), rr.ttl, rr.rtype) for rr in rec.rr] == [("10.32.9.9", 30, QTYPE.A)]
    finally:
        dp.apply_dns(old)


def test_stats_name_every_counter(dp) -> None:
    assert set(dp.dns_stats()) == set(abi.DNS_STAT_NAMES.values())
    assert ctypes.sizeof(abi.DnsKey) == abi.DNS_NAME_MAX


def test_the_verifier_budget_keeps_a_wide_margin(dp) -> None:
    """The fast path costs the verifier ~85,000 instructions of fdp_from_container's ~94,000
    (of 1,000,000 allowed; older kernels prune less): a change that multiplies the ways
    through the parser shows here first."""
    n = bpf_syscall.prog_verified_insns(dp.prog_fd(TX))
    if n == 0:
        pytest.skip("this kernel does not report verified_insns (before 5.16)")
    assert n < 250_000, f"fdp_from_container took {n} verifier instructions"
