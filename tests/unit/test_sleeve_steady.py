"""The sleeve's steady paths (``Transmit._one_hop`` behind the route cache, ``Receive._rx_train``,
``Receive._frames_for_us``) against the general paths they shortcut, over fake sockets: the same
datagrams leave, the same frames arrive, the same counters move; and what the shortcuts must not
take (a moved MAC, a changed route, a stranger's train) still goes the general way."""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import Batcher
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.state import MAC_REFRESH
from weave_fdp.datapath.sleeve.transmit import CAPTURE_MAX, HEADROOM, TAILROOM
from weave_fdp.datapath.sleeve.views import StridedViews

A, B, C = (bytes.fromhex(f"7e00000000{i:02x}") for i in (1, 2, 3))
ADDR = {A: ("192.0.2.1", wire.PORT), B: ("192.0.2.2", wire.PORT), C: ("192.0.2.3", wire.PORT)}
MAC_A, MAC_B, MAC_C = (bytes([0x0a, 0, 0, 0, 0, i]) for i in (1, 2, 3))
SECRET = b"s" * 32
MSS = 1300


class _Sock:
    """A forwarder's sockets: datagrams sent (to whom, the bytes) and frames injected."""

    def __init__(self) -> None:
        self.sent: list[tuple[tuple[str, int], bytes, int]] = []      # (to, bytes, segment size)
        self.injected: list[bytes] = []

    def sendmsg(self, iov: list, anc: object, _flags: int = 0, to: tuple[str, int] | None = None) -> int:
        data = b"".join(bytes(p) for p in iov)
        if to is None:
            self.injected.append(data)
        else:
            cm = list(anc) if anc else []
            self.sent.append((to, data, struct.unpack("=H", cm[0][2])[0] if cm else len(data)))
        return len(data)

    def send(self, b: bytes, *_a: object) -> int:
        self.injected.append(bytes(b))
        return len(b)

    def setsockopt(self, *_a: object) -> None:
        pass


class _General(Forwarder):
    """The same forwarder with its steady paths off: every frame takes the general way."""

    def _one_hop(self, *_a: object) -> bool:
        return False

    def _rx_train(self, *_a: object) -> bool:
        return False

    def _frames_for_us(self, _body: memoryview) -> None:
        return None


def _forwarder(cls: type[Forwarder], local: bytes, sealed: bool, peers: tuple[bytes, ...] = (B,)) -> Forwarder:
    fw = cls(local, "unused0", secret_for=(lambda _p: SECRET) if sealed else None)
    fw.set_peers({p: ADDR[p] for p in peers})
    fw.set_routes({p: p for p in peers}, {local: list(peers), **{p: [] for p in peers}})
    now = time.monotonic()
    for p in peers:
        fw._peer_version(fw.links[p], wire.PIECE_VERSION, wire.FEATURE_AESGCM if fw.aesgcm else 0)
        fw.links[p].last_rx = fw.links[p].up_since = now
    fw.usock = fw.psock = _Sock()        # type: ignore[assignment]
    return fw


def _tcp(payload: int, *, dst: bytes = MAC_B, src: bytes = MAC_A, sport: int = 40000, gso: bool = True,
         df: bool = True) -> bytes:
    """vnet header + Ethernet + IPv4 + TCP + payload, as the capture reads it (GSO when big)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000 if df else 0, 64, 6, 0, bytes([10, 32, 1, 1]),
                     bytes([10, 32, 2, 1]))
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, 1, 1, 5 << 4, 0x10, 512, 0, 0)
    vnet = fr.VNET.pack(1, 1, 54, MSS, 34, 16) if gso else fr.VNET_ZERO
    return vnet + dst + src + b"\x08\x00" + ip + tcp + os.urandom(payload)


class _Capture:
    """The capture buffer of a forwarder, with its piece views (as the capture loop sets them)."""

    def __init__(self, fw: Forwarder) -> None:
        self.fw = fw
        self.buf = bytearray(HEADROOM + CAPTURE_MAX + TAILROOM)
        self.mv = memoryview(self.buf)
        fw._views = StridedViews(self.mv, CAPTURE_MAX + TAILROOM)

    def __call__(self, frame: bytes) -> None:
        self.buf[HEADROOM:HEADROOM + len(frame)] = frame
        b = Batcher()
        self.fw._outbound(self.mv, len(frame), wire.VNET_LEN, b, 1.0)
        self.fw._flush(b)


def _rx(fw: Forwarder, data: bytes, seg: int, frm: bytes) -> None:
    """One read of ``data`` (a GRO batch of ``seg``-byte segments) from peer ``frm``, as the
    receive loop's ``handle`` takes it."""
    buf = bytearray(data)
    mv = memoryview(buf)
    n, addr = len(buf), ADDR[frm]
    fw._rx_views = StridedViews(mv, len(buf))
    if buf[0] == wire.PIECE_VERSION and 0 < seg < n and fw._rx_train(buf, mv, n, seg, addr, Batcher()):
        return
    if buf[0] == wire.PIECE_VERSION:
        fw._rx_pieces(buf, mv, 0, n, seg if 0 < seg < n else n, addr, Batcher())
    elif not fw._fast_single(buf, mv, 0, n, addr):
        fw._datagram(mv, addr, Batcher())


def _tx_counters(fw: Forwarder) -> tuple:
    flows = sorted((f["src_mac"], f["dst_mac"], f["sport"], f["packets"], f["bytes"], f["via"])
                   for f in fw.datapath_report()["flows"])
    return (flows, fw.tx_peers.snapshot(), dict(fw.stats), {n: dict(l.stats) for n, l in fw.links.items()},
            fw.drops.snapshot())


_FRAMES = st.lists(st.one_of(
    st.builds(lambda n, s: ("gso", n, s), st.integers(1400, 63000), st.sampled_from([40000, 40001])),
    st.builds(lambda n: ("small", n, 0), st.integers(0, 1300)),
    st.builds(lambda n: ("near-limit", n, 0), st.integers(1330, 1420)),
    st.just(("flood", 100, 0)), st.just(("unknown", 100, 0)), st.just(("big-plain", 9000, 0))),
    min_size=1, max_size=12)


def _make(kind: str, n: int, sport: int) -> bytes:
    if kind == "gso":
        return _tcp(n, sport=sport)
    if kind == "flood":
        return _tcp(n, dst=b"\xff" * 6, gso=False)
    if kind == "unknown":
        return _tcp(n, dst=bytes.fromhex("0a00000000ee"), gso=False)
    return _tcp(n, gso=False, df=kind != "big-plain")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_FRAMES, st.booleans())
def test_the_steady_transmit_path_sends_and_counts_what_the_general_one_does(specs: list, sealed: bool) -> None:
    """Frames of every kind (super-frames, ACK-sized, near the path limit where ICMP "too big"
    applies, floods, unknown MACs, frames that fit one big datagram) captured by a forwarder with
    its route cache and by one without: plain, the same datagrams byte for byte; sealed (nonces
    differ), the same frames out of a receiver; and the same flows, counters and drops."""
    fast, slow = _forwarder(Forwarder, A, sealed), _forwarder(_General, A, sealed)
    for fw in (fast, slow):
        fw.macs[MAC_B] = (B, 1.0)
    cap_fast, cap_slow = _Capture(fast), _Capture(slow)
    frames = [_make(*s) for s in specs]
    for f in frames:
        cap_fast(f)
        cap_slow(f)
    assert _tx_counters(fast) == _tx_counters(slow)
    assert fast.psock.injected == slow.psock.injected          # ICMP "too big", if any   # type: ignore[union-attr]
    if not sealed:
        assert fast.usock.sent == slow.usock.sent              # type: ignore[union-attr]
        return
    got = []
    for fw in (fast, slow):
        rx = _forwarder(_General, B, sealed, peers=(A,))
        for to, data, seg in fw.usock.sent:                    # type: ignore[union-attr]
            assert to == ADDR[B]
            _rx(rx, data, seg, A)
        got.append(rx.psock.injected)                          # type: ignore[union-attr]
    assert got[0] == got[1]


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("size", [1500, 30000, 63000])
def test_a_whole_train_in_one_read_is_delivered_and_counted_as_the_general_path_does(sealed: bool,
                                                                                       size: int) -> None:
    tx = _forwarder(Forwarder, A, sealed)
    tx.macs[MAC_B] = (B, 1.0)
    _Capture(tx)(_tcp(size))
    (_to, data, seg), = tx.usock.sent                          # type: ignore[union-attr]
    fast, slow = _forwarder(Forwarder, B, sealed, peers=(A,)), _forwarder(_General, B, sealed, peers=(A,))
    for rx in (fast, slow):
        _rx(rx, data, seg, A)
    assert fast.psock.injected == slow.psock.injected and len(fast.psock.injected) == 1   # type: ignore[union-attr]
    assert fast.macs[MAC_A][0] == A == slow.macs[MAC_A][0]
    assert dict(fast.stats) == dict(slow.stats) and fast.links[A].stats == slow.links[A].stats
    assert fast.rx_peers.snapshot() == slow.rx_peers.snapshot()
    assert [f["bytes"] for f in fast.datapath_report()["flows"]] == [f["bytes"] for f in slow.datapath_report()["flows"]]


def _train_from(tx_peer: bytes, frame: bytes, to: bytes = B) -> tuple[bytes, int]:
    tx = _forwarder(Forwarder, tx_peer, False, peers=(to,))
    tx.macs[MAC_B] = (to, 1.0)
    _Capture(tx)(frame)
    (_to, data, seg), = tx.usock.sent                          # type: ignore[union-attr]
    return data, seg


def test_a_train_the_steady_path_must_not_take_is_left_to_the_general_one() -> None:
    """A train from the right peer but another address, a train whose pieces were relabelled,
    a read holding a train and a half: ``_rx_train`` declines (returns False, touches nothing)."""
    data, seg = _train_from(A, _tcp(30000))
    rx = _forwarder(Forwarder, B, False, peers=(A,))
    buf = bytearray(data)
    assert not rx._rx_train(buf, memoryview(buf), len(buf), seg, ("198.51.100.9", wire.PORT), Batcher())
    bad = bytearray(data)
    bad[seg + 9] ^= 1                                          # the second piece's seq
    assert not rx._rx_train(bad, memoryview(bad), len(bad), seg, ADDR[A], Batcher())
    two = bytearray(data + data[:seg])
    assert not rx._rx_train(two, memoryview(two), len(two), seg, ADDR[A], Batcher())
    assert rx.psock.injected == [] and rx.stats["pieced_rx"] == 0 and rx.links[A].stats["rx_pkts"] == 0   # type: ignore[union-attr]
    _rx(rx, bytes(bad), seg, A)                                # the general path names it
    assert rx.psock.injected == []                             # type: ignore[union-attr]


def test_acks_batched_in_one_datagram_are_each_delivered_and_a_bad_tail_delivers_none() -> None:
    rx = _forwarder(Forwarder, B, False, peers=(A,))
    acks = [_tcp(0, dst=MAC_B, src=MAC_A, gso=False)[wire.VNET_LEN:] for _ in range(3)]
    body = b"".join(wire.encode_entry(A, B, f) + f for f in acks)
    dg = wire.encode_header(A) + bytes([wire.T_FRAMES]) + body
    _rx(rx, dg, 0, A)
    assert [f[wire.VNET_LEN:] for f in rx.psock.injected] == acks   # type: ignore[union-attr]
    assert rx.drops.snapshot() == {}
    rx2 = _forwarder(Forwarder, B, False, peers=(A,))
    _rx(rx2, dg + b"\x00\x01\x02", 0, A)                       # a truncated fourth entry
    assert rx2.psock.injected == [] and sum(rx2.drops.snapshot().values()) == 1   # type: ignore[union-attr]


def test_the_route_cache_follows_a_moved_mac_and_a_changed_route() -> None:
    """A MAC learned from a frame that came from another peer moves its traffic there at the
    next captured frame; a route that goes away takes the cached way with it."""
    tx = _forwarder(Forwarder, A, False, peers=(B, C))
    cap = _Capture(tx)
    tx.macs[MAC_B] = (B, 1.0)
    tx.route_gen += 1
    cap(_tcp(20000))
    assert tx.usock.sent[-1][0] == ADDR[B]                     # type: ignore[union-attr]
    # the receive side learns MAC_B behind C (a container moved)
    ack = _tcp(0, dst=MAC_A, src=MAC_B, gso=False)[wire.VNET_LEN:]
    _rx(tx, wire.encode_header(C) + bytes([wire.T_FRAMES]) + wire.encode_entry(C, A, ack) + ack, 0, C)
    cap(_tcp(20000))
    assert tx.usock.sent[-1][0] == ADDR[C]                     # type: ignore[union-attr]
    tx.set_routes({B: B}, {A: [B], B: [], C: []})              # C unreachable now: MAC_B forgotten, flooded
    n = len(tx.usock.sent)                                     # type: ignore[union-attr]
    cap(_tcp(20000))
    assert [to for to, _d, _s in tx.usock.sent[n:]] == [ADDR[B]]   # type: ignore[union-attr]


def test_a_mac_that_keeps_sending_is_renewed_not_forgotten() -> None:
    rx = _forwarder(Forwarder, B, False, peers=(A,))
    ack = _tcp(0, dst=MAC_B, src=MAC_A, gso=False)[wire.VNET_LEN:]
    dg = wire.encode_header(A) + bytes([wire.T_FRAMES]) + wire.encode_entry(A, B, ack) + ack
    rx._rx_now = 1000.0
    _rx(rx, dg, 0, A)
    gen = rx.route_gen
    assert rx.macs[MAC_A] == (A, 1000.0)
    rx._rx_now = 1000.0 + MAC_REFRESH / 2
    _rx(rx, dg, 0, A)
    assert rx.macs[MAC_A] == (A, 1000.0)                       # not yet: no write per frame
    rx._rx_now = 1000.0 + MAC_REFRESH + 1
    _rx(rx, dg, 0, A)
    assert rx.macs[MAC_A] == (A, 1000.0 + MAC_REFRESH + 1) and rx.route_gen == gen   # same peer: cache kept


def test_strided_views_are_the_slices_and_are_made_once() -> None:
    buf = bytearray(os.urandom(10000))
    v = StridedViews(memoryview(buf), 5000)
    got = v.get(100, 1000, 24, 4)
    assert [bytes(x) for x in got] == [bytes(buf[o + 24:o + 1000]) for o in range(100, 4100, 1000)]
    assert v.get(100, 1000, 24, 2)[1] is got[1]               # the same view objects, not new ones
    with pytest.raises(ValueError):
        v.get(100, 1000, 24, 6)                                # past the span
    v.release()
