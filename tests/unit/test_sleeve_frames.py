"""Frame helpers (ICMP too-big, GSO segment size), PMTU prober, static routes (pure)."""

from __future__ import annotations

import struct

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import run, wire
from weave_fdp.datapath.sleeve.pmtu import BIG_PAYLOAD, PmtuProber

SRC_MAC, DST_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ipv4_tcp(df: bool = True, payload: int = 1400) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, 0x10, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + payload, 1, 0x4000 if df else 0, 64, 6, 0,
                     bytes([10, 32, 1, 1]), bytes([10, 32, 2, 1]))
    return DST_MAC + SRC_MAC + b"\x08\x00" + ip + tcp + bytes(payload)


def test_icmp_frag_needed_for_df_ipv4() -> None:
    f = ipv4_tcp()
    r = fr.too_big_reply(f, 1399)
    assert r is not None
    assert r[:6] == SRC_MAC and r[6:12] == DST_MAC
    ip = r[14:34]
    assert fr.checksum(ip) == 0 and ip[9] == 1
    assert ip[12:16] == bytes([10, 32, 2, 1]) and ip[16:20] == bytes([10, 32, 1, 1])
    icmp = r[34:]
    assert icmp[0] == 3 and icmp[1] == 4 and struct.unpack("!H", icmp[6:8])[0] == 1399
    assert fr.checksum(icmp) == 0
    assert icmp[8:28] == f[14:34]          # quotes the original IP header


def test_no_icmp_when_fragmentable_or_not_ip() -> None:
    assert fr.too_big_reply(ipv4_tcp(df=False), 1000) is None
    assert fr.too_big_reply(DST_MAC + SRC_MAC + b"\x08\x06" + bytes(28), 1000) is None


def test_ipv6_packet_too_big() -> None:
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, 1400, 17, 64, b"\xfd" + bytes(15), b"\xfe" + bytes(15))
    r = fr.too_big_reply(DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + bytes(1400), 1280)
    assert r is not None and r[14 + 6] == 58 and r[54] == 2


def test_gso_segment_length() -> None:
    f = ipv4_tcp(payload=60000)
    vnet = fr.VNET.pack(1, 1, 54, 1398, 34, 16)
    assert fr.wire_segment_len(vnet, f) == 14 + 20 + 20 + 1398
    assert fr.wire_segment_len(fr.VNET_ZERO, f) == len(f)


def test_pmtu_prober_discovers_and_follows_changes() -> None:
    p = PmtuProber(1500)
    assert p.payload == 1472 and not p.settled
    probes = p.due(now=0.0)
    sizes = [s for _, s, df in probes if df]
    assert max(sizes) == 1472 and 548 in sizes
    for pid, size, df in probes:
        if df and size <= 1400 - wire.IP_UDP_OVERHEAD:
            p.on_ack(pid, size)
    assert p.payload == 1372 and p.settled
    assert p.due(now=0.5) == []            # not yet time
    probes = p.due(now=100.0)
    for pid, size, _df in probes:
        if size <= 1252:
            p.on_ack(pid, size)
    p.due(now=200.0)                       # closing the round applies the lower value
    assert p.payload == 1252


def test_pmtu_big_probe_turns_big_datagrams_on_and_off() -> None:
    p = PmtuProber(1500)
    probes = p.due(now=0.0)
    big = [(pid, size) for pid, size, df in probes if not df]
    assert big == [(big[0][0], BIG_PAYLOAD)] and not p.big_ok
    assert not p.on_ack(big[0][0], 1000)          # an ack of the wrong size is ignored
    assert p.on_ack(big[0][0], BIG_PAYLOAD) and p.big_ok
    for pid, size, df in probes:
        if df:
            p.on_ack(pid, size)
    assert p.payload == 1472
    # Next round: small probes answered, the big one not (fragments dropped now): off again.
    for pid, size, df in p.due(now=100.0):
        if df:
            p.on_ack(pid, size)
    p.due(now=200.0)
    assert not p.big_ok and p.payload == 1472
    # Peer silent for a round: no change of mind about fragments.
    q = PmtuProber(1500)
    q.on_ack(next(pid for pid, _s, df in q.due(now=0.0) if not df), BIG_PAYLOAD)
    q.due(now=100.0)
    q.due(now=200.0)
    assert q.big_ok
    assert all(df for _, _, df in PmtuProber(1500, big=False).due(now=0.0))


def test_pmtu_lost_after_unanswered_rounds() -> None:
    p = PmtuProber(1500)
    for t in range(5):
        p.due(now=t * 100.0)
    assert p.lost and p.payload == 1472


def test_static_routes_on_a_line() -> None:
    names = ["7e:00:00:00:00:0a", "7e:00:00:00:00:0b", "7e:00:00:00:00:0c"]
    a, b, c = (wire.name_to_bytes(n) for n in names)
    line = [names[:2], names[1:]]

    def tables(local: str) -> tuple[dict, dict]:
        return run.static_routes(local, names, line)

    assert tables(names[0])[0] == {b: b, c: b}
    assert tables(names[1])[1] == {a: [c], b: [a, c], c: [a]}
    assert tables(names[0])[1] == {a: [b], b: [], c: []}
