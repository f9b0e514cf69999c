"""What the sleeve says about a peer's wire version: what the peer advertises, and what is used."""

from __future__ import annotations

import logging

import pytest

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.forwarder import Forwarder

PEER = bytes.fromhex("7e0000000002")


def heartbeat(version: int) -> memoryview:
    return memoryview(wire.encode_heartbeat(1, 1400, version)[1:])


@pytest.mark.parametrize("pieces,used", [(True, 2), (False, 1)], ids=["v2-here", "v1-here"])
def test_a_version2_peer_is_reported_as_speaking_2(pieces: bool, used: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fw = Forwarder(bytes.fromhex("7e0000000001"), "unused0", pieces=pieces)
    fw.set_peers({PEER: ("192.0.2.2", wire.PORT)})
    assert fw.peer_status(PEER)["peer_wire_version"] is None     # no heartbeat yet: unknown, not "1"
    with caplog.at_level(logging.INFO, logger="weave_fdp.sleeve"):
        fw._peer_version(fw.links[PEER], *wire.heartbeat_version(heartbeat(2)))
        fw._peer_version(fw.links[PEER], *wire.heartbeat_version(heartbeat(2)))   # no second line
    st = fw.peer_status(PEER)
    assert st["peer_wire_version"] == 2 and st["wire_version"] == used
    lines = [r.getMessage() for r in caplog.records if "speaks" in r.getMessage()]
    assert len(lines) == 1 and "speaks wire version 2" in lines[0], lines
    assert ("we use 1" in lines[0]) == (used == 1)


def test_a_version1_peer_is_reported_as_speaking_1() -> None:
    fw = Forwarder(bytes.fromhex("7e0000000001"), "unused0")
    fw.set_peers({PEER: ("192.0.2.2", wire.PORT)})
    old = memoryview(wire.encode_heartbeat(1, 1400)[1:1 + wire.HB.size])   # no trailing version byte
    fw._peer_version(fw.links[PEER], *wire.heartbeat_version(old))
    assert fw.peer_status(PEER)["peer_wire_version"] == 1 and fw.peer_status(PEER)["wire_version"] == 1
