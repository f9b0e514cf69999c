"""Heartbeat codec: sized to the MTU, round-trips, refuses garbage."""

from __future__ import annotations

from hypothesis import given, strategies as st

from weave_fdp.datapath.fastdp import heartbeat as hb


def test_roundtrip_and_size() -> None:
    h = hb.Heartbeat(hb.PING, 0x123, 7, 99)
    frame = hb.encode_frame(h, 1450)
    assert len(frame) == 14 + 1450
    assert hb.decode_frame(frame) == h
    dgram = hb.encode_datagram(h, 1, 2, 1450)
    assert dgram[0] == 0x08 and int.from_bytes(dgram[4:7], "big") == (1 | 2 << 12)
    assert len(dgram) + 8 + 20 == 1450 + 50  # UDP + IPv4 headers: exactly the underlay MTU


@given(st.binary(max_size=80))
def test_garbage_never_raises(data: bytes) -> None:
    hb.decode_frame(data)


def test_layout_is_the_abis() -> None:
    """The programs read a heartbeat's kind and source at the header's offsets: the codec puts them there."""
    from weave_fdp.datapath.fastdp import abi
    body = hb.encode_frame(hb.Heartbeat(hb.PONG, 0x2AB, 1, 2), 64)[hb.ETH_HLEN:]
    assert int.from_bytes(body[:4], "big") == abi.HB_MAGIC
    assert body[abi.HB_KIND_OFF] == abi.HB_PONG
    assert int.from_bytes(body[abi.HB_SRC_OFF:abi.HB_SRC_OFF + 2], "big") == 0x2AB
