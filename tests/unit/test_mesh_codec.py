"""Wire codec: round-trips, and every decoder fails with ProtocolError (never a crash)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.errors import ProtocolError
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import ConnEntry, Features, Hello, PeerEntry
from weave_fdp.router.mesh.crypto import KeyPair, SessionCipher

NAME = "7e:00:00:00:00:01"
OTHER = "7e:00:00:00:00:02"
FEATURES = Features(NAME, "host1", 2**63, 1700000000000, 4095, 12345, ("fastdp", "sleeve"), True, 6783, "0.1.0")
ENTRY = PeerEntry(NAME, "host1", 7, 1700000000000, 3, 17,
                  (ConnEntry(OTHER, "192.0.2.2:6783", True, True), ConnEntry("7e:00:00:00:00:03", "[2001:db8::1]:6783", False, False)))

names = st.integers(0, 2**48 - 1).map(lambda v: ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8)))
addresses = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)   # addresses are ASCII
conn_entries = st.builds(ConnEntry, names, addresses, st.booleans(), st.booleans())
peer_entries = st.builds(PeerEntry, names, st.text(max_size=30), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                         st.integers(0, 2**64 - 1), st.integers(0, 4095), st.lists(conn_entries, max_size=5).map(tuple))

DECODERS = [codec.decode_preamble, codec.decode_hello, codec.decode_features, codec.decode_message,
            codec.decode_topology, codec.decode_topology_v3, lambda b: codec.decode_frame_length(b[:4])]


def test_preamble_and_negotiation() -> None:
    assert codec.decode_preamble(codec.encode_preamble(1, 3)) == (1, 3)
    assert codec.negotiate((1, 3), (1, 2)) == 2
    assert codec.negotiate((1, 2)) == 2 and codec.negotiate((1, 3)) == codec.PROTOCOL_MAX == 3
    with pytest.raises(ProtocolError, match="version mismatch"):
        codec.negotiate((3, 4), (1, 2))
    with pytest.raises(ProtocolError, match="expected 6 bytes"):
        codec.decode_preamble(b"GET /")
    with pytest.raises(ProtocolError, match="not a weave-fdp peer"):
        codec.decode_preamble(b"HTTP/1")


def test_hello_features_roundtrip() -> None:
    for h in (Hello(False, None), Hello(True, bytes(range(32)))):
        assert codec.decode_hello(codec.encode_hello(h)) == h
    assert codec.decode_features(codec.encode_features(FEATURES)) == FEATURES


@given(st.lists(peer_entries, max_size=6, unique_by=lambda e: e.name))
def test_topology_roundtrip(entries: list[PeerEntry]) -> None:
    data = codec.encode_topology(entries)
    assert codec.decode_topology(data) == entries
    assert codec.TopologyEncoder().encode(entries) == data


@given(st.lists(peer_entries, max_size=6, unique_by=lambda e: e.name))
def test_topology_v3_roundtrip(entries: list[PeerEntry]) -> None:
    data = codec.encode_topology_v3(entries)
    back = codec.decode_topology_v3(data)
    # the derived fields first (the connection list is decoded on first use), then all of it
    for e, b in zip(entries, back):
        assert (b.key(), b.record, b.nb, b.established_set, b.established_peers) == \
            (e.key(), e.record, e.nb, e.established_set, e.established_peers)
    assert back == entries
    # an entry forwards the bytes it came in, and re-encodes to the same bytes
    assert codec.TopologyEncoder().encode(back, 3) == data == codec.TopologyEncoder().encode(entries, 3)
    assert codec.decode_topology(codec.encode_topology(back)) == entries   # to a protocol 2 link


def test_topology_v3_is_smaller_and_skips_unwanted_entries() -> None:
    v2, v3 = codec.encode_topology([ENTRY]), codec.encode_topology_v3([ENTRY])
    assert len(v3) < len(v2)
    seen: list[str] = []
    other = PeerEntry(OTHER, "host2", 1, 1, 1, 2, ())
    out = codec.decode_topology_v3(codec.encode_topology_v3([ENTRY, other]),
                                   lambda n, k: bool(seen.append(n)) or n == OTHER)
    assert seen == [NAME, OTHER] and out == [other]


def _v3_variants() -> list[bytes]:
    """Protocol 3 entries broken in one field each."""
    good = codec.encode_topology_v3([ENTRY])
    head, rest = good[:codec.ENTRY_HEAD.size], good[codec.ENTRY_HEAD.size:]
    nb, inc, ver, uid, length = codec.ENTRY_HEAD.unpack(head)
    sid, nlen, count = codec.ENTRY_REST.unpack_from(rest)
    tbl = codec.ENTRY_REST.size + nlen
    bad_flags = bytearray(good)
    bad_flags[codec.ENTRY_HEAD.size + tbl + 6] = 4
    bad_alen = bytearray(good)
    bad_alen[codec.ENTRY_HEAD.size + tbl + 7] += 1
    bad_addr = bytearray(good)
    bad_addr[-1] = 0xC3
    bad_nick = bytearray(good)
    bad_nick[codec.ENTRY_HEAD.size + codec.ENTRY_REST.size] = 0xFF
    return [codec.ENTRY_HEAD.pack(nb, inc, ver, uid, length + 1) + rest,           # length past the end
            codec.ENTRY_HEAD.pack(nb, inc, ver, uid, length - 1) + rest[:-1],      # table does not fit
            head + codec.ENTRY_REST.pack(4096, nlen, count) + rest[6:],            # short ID not u12
            head + codec.ENTRY_REST.pack(sid, nlen, count + 1) + rest[6:],         # table past the rest
            bytes(bad_flags), bytes(bad_alen), bytes(bad_addr), bytes(bad_nick), good + b"\x00"]


@pytest.mark.parametrize("data", _v3_variants())
def test_topology_v3_malformed_entries_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_topology_v3(data)


def test_topology_v3_layout_is_checked_even_for_unwanted_entries() -> None:
    bad = _v3_variants()[5]   # address lengths that do not add up
    with pytest.raises(ProtocolError):
        codec.decode_topology_v3(bad, lambda n, k: False)


@settings(max_examples=300)
@given(st.lists(peer_entries, min_size=1, max_size=3, unique_by=lambda e: e.name), st.data())
def test_topology_v3_mutations_never_crash(entries: list[PeerEntry], data: st.DataObject) -> None:
    raw = bytearray(codec.encode_topology_v3(entries))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        for e in codec.decode_topology_v3(bytes(raw[:cut])):
            assert isinstance(e.connections, tuple)   # what the decoder let through decodes
    except ProtocolError:
        pass


def test_non_ascii_addresses_are_refused() -> None:
    with pytest.raises(ProtocolError):
        codec.decode_topology(codec.pack([[NAME, 1, 1, 1, codec.pack(["n", 5, [[OTHER, "h\u00e9:1", True, True]]])]]))


def test_messages_roundtrip() -> None:
    cases = [(codec.HEARTBEAT, {}), (codec.CLOSE, {"r": "bye"}), (codec.OVERLAY_CONTROL, {"p": b"\x00\x01"}),
             (codec.GOSSIP, {"c": "ipam", "s": NAME, "p": b"x"}),
             (codec.GOSSIP_BROADCAST, {"c": "dns", "s": NAME, "p": b""}),
             (codec.GOSSIP_UNICAST, {"c": "ipam", "s": NAME, "d": OTHER, "p": b"y"})]
    for tag, body in cases:
        assert codec.decode_message(codec.encode_message(tag, body)) == (tag, body)


@pytest.mark.parametrize("data", [
    b"", b"\x07" + codec.pack({}), b"\x02" + codec.pack([]), b"\x02" + codec.pack({"c": 1, "s": NAME, "p": b""}),
    b"\x02" + codec.pack({"c": "x", "s": "not-a-name", "p": b""}), b"\x03" + codec.pack({"c": "x", "s": NAME, "p": b""}),
    b"\x05" + codec.pack({"p": "str not bin"}), b"\x02" + b"\xc1", b"\x02" + codec.pack({"c": "x"}) + b"trailing",
])
def test_bad_messages_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_message(data)


def test_wrong_types_and_ranges() -> None:
    good = msgpack.unpackb(codec.encode_features(FEATURES))
    for key, bad in [("sid", 4096), ("uid", -1), ("uid", True), ("port", 70000), ("name", "zz"), ("ov", "fastdp"),
                     ("tr", 1), ("nick", "x" * 300)]:
        with pytest.raises(ProtocolError):
            codec.decode_features(codec.pack({**good, key: bad}))
    with pytest.raises(ProtocolError):
        codec.decode_hello(codec.pack({"crypto": True, "pk": b"short"}))
    with pytest.raises(ProtocolError):
        codec.decode_topology(codec.pack([[NAME, 1, 1, 1, codec.pack(["n", 5000, []])]]))


def test_truncated_and_oversized() -> None:
    data = codec.encode_topology([ENTRY])
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            codec.decode_topology(data[:cut])
    data = codec.encode_topology_v3([ENTRY])
    for cut in range(1, len(data)):
        with pytest.raises(ProtocolError):
            codec.decode_topology_v3(data[:cut])
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.decode_frame_length((codec.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.decode_frame_length((2000).to_bytes(4, "big"), codec.MAX_HELLO)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_every_decoder(data: bytes) -> None:
    for dec in DECODERS:
        try:
            dec(data)
        except ProtocolError:
            pass


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=5),
                    lambda ch: st.lists(ch, max_size=6) | st.dictionaries(st.text(max_size=4), ch, max_size=6),
                    max_leaves=20), st.sampled_from(sorted(codec.TAG_NAMES)))
def test_fuzz_structured(obj: object, tag: int) -> None:
    """Well-formed msgpack of the wrong shape: still only ProtocolError."""
    packed = codec.pack(obj)
    for dec in (codec.decode_hello, codec.decode_features, codec.decode_topology, codec.decode_topology_v3):
        try:
            dec(packed)
        except ProtocolError:
            pass
    try:
        codec.decode_message(bytes([tag]) + packed)
    except ProtocolError:
        pass


def _pair(pw_a: bytes, pw_b: bytes) -> tuple[SessionCipher, SessionCipher]:
    a, b = KeyPair(), KeyPair()
    return (SessionCipher(a.session_key(b.public, pw_a), a.public, b.public),
            SessionCipher(b.session_key(a.public, pw_b), b.public, a.public))


def test_crypto_roundtrip_and_sequence() -> None:
    a, b = _pair(b"pw", b"pw")
    msgs = [b"one", b"two", b""]
    sealed = [a.seal(m) for m in msgs]
    assert [b.open(s) for s in sealed] == msgs
    assert b.open(a.seal(b"x")) == b"x"
    assert a.open(b.seal(b"reply")) == b"reply"  # directions use distinct nonces
    replay = sealed[0]
    with pytest.raises(ProtocolError):
        b.open(replay)  # implicit nonce moved on: a replayed frame fails


def test_crypto_wrong_password_and_tamper() -> None:
    a, b = _pair(b"pw", b"other")
    with pytest.raises(ProtocolError, match="password"):
        b.open(a.seal(b"hello"))
    a, b = _pair(b"pw", b"pw")
    ct = bytearray(a.seal(b"hello"))
    ct[0] ^= 1
    with pytest.raises(ProtocolError):
        b.open(bytes(ct))
    with pytest.raises(ProtocolError):
        b.open(b"short")


def test_protocol_max_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from weave_fdp.errors import UsageError
    from weave_fdp.router.mesh.transport import PROTOCOL_MAX_ENV, protocol_max_from_env

    monkeypatch.delenv(PROTOCOL_MAX_ENV, raising=False)
    assert protocol_max_from_env() == codec.PROTOCOL_MAX
    monkeypatch.setenv(PROTOCOL_MAX_ENV, "2")
    assert protocol_max_from_env() == 2
    assert codec.negotiate((1, 3), (codec.PROTOCOL_MIN, 2)) == 2
    for bad in ("0", "4", "x", ""):
        monkeypatch.setenv(PROTOCOL_MAX_ENV, bad)
        with pytest.raises(UsageError, match=PROTOCOL_MAX_ENV):
            protocol_max_from_env()
