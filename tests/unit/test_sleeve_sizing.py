"""How big a sleeve UDP GSO train is, and the container GSO limit that makes one
super-frame one train."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.sizing import (GSO_MAX_BYTES, PIECED_OVERHEAD, container_gso_max_size,
                                              one_train_frame, segments_per_train)

PEER = bytes.fromhex("7e0000000002")


def test_on_a_1500_byte_underlay_one_train_is_44_pieces_and_a_64k_super_frame_needs_45() -> None:
    assert segments_per_train(1472) == 44
    assert one_train_frame(1472) == 63669 == container_gso_max_size(1500)
    # what TCP builds under the kernel's default limit with MSS 1371 (47 segments + headers)
    body = PIECED_OVERHEAD + 47 * 1371 + 66
    assert len(wire.split_pieces(PEER, 1, bytes(body), 1472, sealed=True)) == 45


@given(st.integers(576, 9000))
def test_a_frame_of_one_train_frame_bytes_is_one_train_and_one_ip_packet(underlay_mtu: int) -> None:
    payload = underlay_mtu - wire.IP_UDP_OVERHEAD
    frame = one_train_frame(payload)
    pieces = wire.split_pieces(PEER, 1, bytes(frame + PIECED_OVERHEAD), payload, sealed=True)
    assert len(pieces) <= segments_per_train(payload)
    assert sum(map(len, pieces)) <= GSO_MAX_BYTES <= 65507           # one GSO skb is one IPv4 packet
    # and not a byte of room wasted: one byte more is one piece more than a train holds
    more = wire.split_pieces(PEER, 1, bytes(frame + PIECED_OVERHEAD + 1), payload, sealed=True)
    assert len(more) == segments_per_train(payload) + 1
    assert 16384 <= container_gso_max_size(underlay_mtu) <= 65536
