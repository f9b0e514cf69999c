"""Cutting an IPv4 TCP GSO (BIG TCP) super-frame into smaller GSO super-frames (pure).

Besides the per-part rewrites, every case checks the end-to-end promise: segmenting the
parts the way the kernel does gives exactly the segments segmenting the original gives.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from weave_fdp.datapath.sleeve import frames as fr

pytestmark = pytest.mark.unit

SRC_MAC, DST_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC_IP, DST_IP = bytes([10, 32, 1, 1]), bytes([10, 32, 2, 1])
NEEDS_CSUM, GSO_TCPV4, ECN = 1, 1, 0x80
CWR, PSH, ACK, FIN = 0x80, 0x08, 0x10, 0x01
MSS = 1448
MAX_PART = 14 + 0xFFFF


def payload_bytes(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def partial_sum(src: bytes, dst: bytes, tcp_len: int) -> int:
    """What __tcp_v4_send_check leaves in th->check for CHECKSUM_PARTIAL (a BIG TCP length adds both halves)."""
    return ~fr.checksum(src + dst + struct.pack("!HI", 6, tcp_len)) & 0xFFFF


def tcp_frame(payload: int, *, gso_size: int = MSS, seq: int = 1, ip_id: int = 7, flags: int = ACK,
              ip_opts: bytes = b"", tcp_opts: bytes = b"", gso_type: int = GSO_TCPV4,
              vnet_flags: int = NEEDS_CSUM, src: bytes = SRC_IP, dst: bytes = DST_IP) -> tuple[bytes, bytes]:
    """(vnet header, Ethernet + IPv4 (DF) + TCP + payload) as a container's stack hands it over;
    a BIG TCP frame (IP length > 65535) states total length 0."""
    ihl, thl = 20 + len(ip_opts), 20 + len(tcp_opts)
    ip_len = ihl + thl + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ip_len if ip_len <= 0xFFFF else 0,
                               ip_id, 0x4000, 64, 6, 0, src, dst) + ip_opts)
    struct.pack_into("!H", ip, 10, fr.checksum(bytes(ip)))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, (thl // 4) << 4, flags, 512,
                      partial_sum(src, dst, thl + payload), 0) + tcp_opts
    vnet = fr.VNET.pack(vnet_flags, gso_type, 14 + ihl + thl, gso_size, 14 + ihl, 16)
    return vnet, DST_MAC + SRC_MAC + b"\x08\x00" + bytes(ip) + tcp + payload_bytes(payload)


def offsets(frame: bytes) -> tuple[int, int]:
    """(TCP header offset, payload offset)."""
    l4 = 14 + (frame[14] & 0x0F) * 4
    return l4, l4 + (frame[l4 + 12] >> 4) * 4


def complete(frame: bytes) -> bytes:
    """A NIC serving NEEDS_CSUM: sum from csum_start on (check holding the partial sum), store the complement."""
    l4, _ = offsets(frame)
    check = fr.checksum(frame[l4:])
    return frame[:l4 + 16] + struct.pack("!H", check) + frame[l4 + 18:]


def tcp_checksum_ok(frame: bytes) -> bool:
    """The receiver's check: pseudo-header with the real TCP length, then the segment."""
    l4, _ = offsets(frame)
    pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, len(frame) - l4)
    return fr.checksum(pseudo + frame[l4:]) == 0


def segment(vnet: bytes, frame: bytes) -> list[bytes]:
    """Reference: the kernel's tcp_gso_segment + inet_gso_segment, then checksum completion."""
    _f, gso_type, _h, gso_size, _cs, _co = fr.VNET.unpack(vnet)
    l4, hlen = offsets(frame)
    payload = frame[hlen:]
    mss = gso_size if gso_type & ~ECN == GSO_TCPV4 else max(1, len(payload))
    ip_id, = struct.unpack_from("!H", frame, 18)
    seq, = struct.unpack_from("!I", frame, l4 + 4)
    flags = frame[l4 + 13]
    cuts = list(range(0, len(payload), mss)) or [0]
    out = []
    for i, off in enumerate(cuts):
        chunk = payload[off:off + mss]
        h = bytearray(frame[:hlen])
        f = flags if i == 0 else flags & ~CWR
        h[l4 + 13] = f if i == len(cuts) - 1 else f & ~(PSH | FIN)
        struct.pack_into("!HH", h, 16, hlen - 14 + len(chunk), (ip_id + i) & 0xFFFF)
        struct.pack_into("!H", h, 24, 0)
        struct.pack_into("!H", h, 24, fr.checksum(bytes(h[14:l4])))
        struct.pack_into("!I", h, l4 + 4, (seq + off) & 0xFFFFFFFF)
        struct.pack_into("!H", h, l4 + 16, partial_sum(frame[26:30], frame[30:34], hlen - l4 + len(chunk)))
        out.append(complete(bytes(h) + chunk))
    return out


def check_split(vnet: bytes, frame: bytes, limit: int) -> list[tuple[bytes, bytes, memoryview]]:
    """Every promise of split_tcp_super_frame about one well-formed frame; returns the parts."""
    parts = fr.split_tcp_super_frame(vnet, frame, limit)
    assert parts is not None
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = fr.VNET.unpack(vnet)
    l4, hlen = offsets(frame)
    ip_id, = struct.unpack_from("!H", frame, 18)
    seq, = struct.unpack_from("!I", frame, l4 + 4)
    tflags = frame[l4 + 13]
    assert b"".join(bytes(p) for _v, _h, p in parts) == frame[hlen:]
    off = 0
    for k, (pv, ph, pp) in enumerate(parts):
        n = len(pp)
        last = k == len(parts) - 1
        assert isinstance(pp, memoryview) and len(pv) == fr.VNET.size and len(ph) == hlen
        assert len(ph) + n <= min(limit, MAX_PART)
        if not last:
            assert n % gso_size == 0 and n > 0
        part = ph + bytes(pp)
        assert part[:14] == frame[:14] and part[20:24] == frame[20:24] and part[26:l4 + 4] == frame[26:l4 + 4]
        assert part[l4 + 8:l4 + 13] == frame[l4 + 8:l4 + 13] and part[l4 + 14:l4 + 16] == frame[l4 + 14:l4 + 16]
        assert part[l4 + 18:hlen] == frame[l4 + 18:hlen]        # urgent pointer, options
        assert struct.unpack_from("!H", part, 16)[0] == len(part) - 14
        assert struct.unpack_from("!H", part, 18)[0] == (ip_id + off // gso_size) & 0xFFFF
        assert fr.checksum(part[14:l4]) == 0
        assert struct.unpack_from("!I", part, l4 + 4)[0] == (seq + off) & 0xFFFFFFFF
        f = part[l4 + 13]
        assert f & (PSH | FIN) == (tflags & (PSH | FIN) if last else 0)
        assert f & CWR == (tflags & CWR if k == 0 else 0)
        assert f & ~(PSH | FIN | CWR) == tflags & ~(PSH | FIN | CWR)
        assert struct.unpack_from("!H", part, l4 + 16)[0] == partial_sum(frame[26:30], frame[30:34], len(part) - l4)
        assert tcp_checksum_ok(complete(part))
        if n > gso_size:
            assert pv == vnet
        else:
            assert fr.VNET.unpack(pv) == (flags, fr.GSO_NONE, hdr_len, 0, csum_start, csum_offset)
            assert flags & NEEDS_CSUM
        off += n
    want = segment(vnet, frame)
    got = [s for pv, ph, pp in parts for s in segment(pv, ph + bytes(pp))]
    assert got == want
    return parts


@st.composite
def super_frames(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    gso_size = draw(st.one_of(st.integers(1, 64), st.integers(500, 9000)))
    sizes = [st.integers(0, 3 * gso_size), st.integers(0, min(150_000, 300 * gso_size))]
    if gso_size >= 500:
        sizes.append(st.integers(65_500, 150_000))            # BIG TCP
    payload = draw(st.one_of(sizes))
    ip_opts = draw(st.binary(max_size=10).map(lambda b: b + b"\x01" * (-len(b) % 4)))
    tcp_opts = draw(st.binary(max_size=10).map(lambda b: b + b"\x01" * (-len(b) % 4)))
    vnet, frame = tcp_frame(
        payload, gso_size=gso_size, seq=draw(st.integers(0, 2**32 - 1)), ip_id=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFF)), ip_opts=ip_opts, tcp_opts=tcp_opts,
        gso_type=GSO_TCPV4 | draw(st.sampled_from([0, ECN])), vnet_flags=NEEDS_CSUM | draw(st.sampled_from([0, 2])),
        src=draw(st.binary(min_size=4, max_size=4)), dst=draw(st.binary(min_size=4, max_size=4)))
    _l4, hlen = offsets(frame)
    limit = hlen + gso_size + draw(st.one_of(st.integers(0, 3 * gso_size), st.integers(0, 80_000)))
    return vnet, frame, limit


@settings(max_examples=200, deadline=None)
@given(super_frames())
def test_split_keeps_every_promise(case: tuple[bytes, bytes, int]) -> None:
    check_split(*case)


def test_big_tcp_frame_into_64k_parts() -> None:
    vnet, frame = tcp_frame(185_000, seq=2**32 - 5000, ip_id=0xFFF0, flags=ACK | PSH | CWR)
    assert frame[16:18] == b"\0\0"                      # BIG TCP: total length 0
    parts = check_split(vnet, frame, MAX_PART)
    per = (MAX_PART - 54) // MSS * MSS
    assert [len(p) for _v, _h, p in parts] == [per, per, 185_000 - 2 * per]
    ids = [struct.unpack_from("!H", h, 18)[0] for _v, h, _p in parts]
    assert ids == [0xFFF0, (0xFFF0 + 45) & 0xFFFF, (0xFFF0 + 90) & 0xFFFF]   # 45 segments a part, wrapping
    assert all(pv == vnet for pv, _h, _p in parts)


def test_limit_beyond_ip_max_is_capped() -> None:
    vnet, frame = tcp_frame(200_000)
    parts = check_split(vnet, frame, 1 << 20)
    assert all(len(h) + len(p) <= MAX_PART for _v, h, p in parts)
    vnet, frame = tcp_frame(200_000, gso_size=32_750)          # two segments would state 65540
    assert [len(p) for _v, _h, p in check_split(vnet, frame, 1 << 20)] == [32_750] * 6 + [3_500]
    vnet, frame = tcp_frame(3 * 65_495, gso_size=13_099)       # five segments state exactly 65535
    parts = check_split(vnet, frame, 1 << 20)
    assert [struct.unpack_from("!H", h, 16)[0] for _v, h, _p in parts] == [0xFFFF] * 3


def test_one_segment_per_part_is_not_gso() -> None:
    vnet, frame = tcp_frame(3 * MSS + 100, gso_type=GSO_TCPV4 | ECN, flags=ACK | FIN | CWR)
    parts = check_split(vnet, frame, 54 + MSS)
    assert [len(p) for _v, _h, p in parts] == [MSS, MSS, MSS, 100]
    assert all(fr.VNET.unpack(pv) == (NEEDS_CSUM, fr.GSO_NONE, 54, 0, 34, 16) for pv, _h, _p in parts)


def test_part_of_several_segments_keeps_gso_and_ecn() -> None:
    vnet, frame = tcp_frame(5 * MSS, gso_type=GSO_TCPV4 | ECN)
    parts = check_split(vnet, frame, 54 + 2 * MSS + MSS // 2)
    assert [len(p) for _v, _h, p in parts] == [2 * MSS, 2 * MSS, MSS]
    assert [pv == vnet for pv, _h, _p in parts] == [True, True, False]


def test_frame_that_fits_comes_back_whole_and_unchanged() -> None:
    vnet, frame = tcp_frame(40 * MSS, ip_opts=b"\x01" * 4, tcp_opts=b"\x01\x01\x08\x0a" + bytes(8),
                            flags=ACK | PSH | CWR)
    parts = fr.split_tcp_super_frame(vnet, memoryview(frame), MAX_PART)
    assert parts is not None and len(parts) == 1
    pv, ph, pp = parts[0]
    assert pv == vnet and ph + bytes(pp) == frame
    assert pp.obj is frame                              # a view, not a copy


def test_empty_and_short_payloads() -> None:
    for payload in (0, 1, MSS):
        vnet, frame = tcp_frame(payload)
        parts = check_split(vnet, frame, 54 + MSS)
        assert len(parts) == 1 and fr.VNET.unpack(parts[0][0])[1] == fr.GSO_NONE


def test_refusals() -> None:
    vnet, frame = tcp_frame(10 * MSS)
    assert check_split(vnet, frame, 54 + MSS)
    split = fr.split_tcp_super_frame

    def vnet_with(**kw: int) -> bytes:
        fields = dict(zip(("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"),
                          fr.VNET.unpack(vnet)))
        fields.update(kw)
        return fr.VNET.pack(*fields.values())

    assert split(vnet_with(gso_type=0), frame, 1514) is None                 # not GSO
    assert split(vnet_with(gso_type=3), frame, 1514) is None                 # GSO UDP
    assert split(vnet_with(gso_type=4), frame, 1514) is None                 # GSO TCPv6
    assert split(vnet_with(gso_size=0), frame, 1514) is None
    assert split(vnet_with(flags=0), frame, 1514) is None                    # no NEEDS_CSUM
    assert split(vnet_with(flags=2), frame, 1514) is None                    # DATA_VALID only
    assert split(vnet_with(csum_start=14), frame, 1514) is None
    assert split(vnet_with(csum_offset=6), frame, 1514) is None
    assert split(vnet[:6], frame, 1514) is None
    assert split(vnet, frame, 54 + MSS - 1) is None                          # limit too small
    ipv6 = frame[:12] + b"\x86\xdd" + frame[14:]
    assert split(vnet, ipv6, 1514) is None
    udp = frame[:23] + b"\x11" + frame[24:]
    assert split(vnet, udp, 1514) is None
    vlan = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    assert split(fr.VNET.pack(NEEDS_CSUM, GSO_TCPV4, 58, MSS, 38, 16), vlan, 1518) is None
    assert split(vnet, frame[:14] + b"\x65" + frame[15:], 1514) is None      # IP version 6 under 0x0800
    assert split(vnet, frame[:14] + b"\x44" + frame[15:], 1514) is None      # IHL 16 bytes
    assert split(vnet, frame[:46] + b"\x40" + frame[47:], 1514) is None      # data offset 16 bytes
    mf = frame[:20] + b"\x20\x00" + frame[22:]
    assert split(vnet, mf, 1514) is None                                     # a fragment
    assert split(vnet, frame[:40], 1514) is None                             # truncated TCP header
    assert split(vnet, frame[:30], 1514) is None                             # truncated IP header
    assert split(vnet, frame[:10], 1514) is None
    assert split(vnet, frame[:-1], 1514) is None                             # total length says more
    assert split(vnet, frame + b"\0", 1514) is None                          # trailing bytes
    zero_len = frame[:16] + b"\0\0" + frame[18:]
    assert split(vnet, zero_len, 1514) is None                               # length 0 on a small frame
    opts_vnet, opts = tcp_frame(10 * MSS, ip_opts=bytes(40), tcp_opts=bytes(40))
    assert split(opts_vnet, opts, 134 + MSS - 1) is None
    assert split(opts_vnet, opts, 134 + MSS) is not None
    big_vnet, big = tcp_frame(70_000)
    assert split(big_vnet, big[:16] + b"\xff\xff" + big[18:], MAX_PART) is None   # BIG frame stating a length
