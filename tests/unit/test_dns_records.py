"""DNS records: merge is a join (commutative, associative, idempotent), tombstones win,
removed names never come back from a partitioned peer, PTR names the newest owner."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.errors import ProtocolError, UsageError
from weave_fdp.router.dns import names, wire
from weave_fdp.router.dns.records import TOMBSTONE_TTL, Entry, Records, shuffled

pytestmark = pytest.mark.unit

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
OBSERVER = "02:00:00:00:00:ff"

entries = st.builds(
    Entry,
    hostname=st.sampled_from(["web.weave.local.", "WEB.weave.local.", "db.weave.local."]),
    origin=st.sampled_from([A, B, C]),
    container=st.sampled_from(["netns:c1", "netns:c2", "weave:extern"]),
    addr=st.sampled_from(["10.32.0.1", "10.32.0.2", "10.32.0.3"]),
    version=st.integers(1, 5),
    tombstone=st.sampled_from([0, 0, 100, 200]),
    created=st.integers(0, 3),
)


def state(r: Records) -> dict:
    return {e.key: e for e in r.entries()}


def merged(*batches: list[Entry]) -> Records:
    r = Records(OBSERVER)
    for b in batches:
        r.merge(b, now=0)
    return r


@given(st.lists(entries, max_size=12), st.lists(entries, max_size=12))
def test_merge_is_commutative(x: list[Entry], y: list[Entry]) -> None:
    assert state(merged(x, y)) == state(merged(y, x))


@given(st.lists(entries, max_size=12), st.lists(entries, max_size=12), st.lists(entries, max_size=12))
def test_merge_is_associative(x: list[Entry], y: list[Entry], z: list[Entry]) -> None:
    xy = merged(x, y)
    yz = merged(y, z)
    assert state(merged(xy.entries(), z)) == state(merged(x, yz.entries()))


@given(st.lists(entries, max_size=12))
def test_merge_is_idempotent_and_reports_nothing_new_the_second_time(x: list[Entry]) -> None:
    r = merged(x)
    before = state(r)
    assert r.merge(x, now=0) == []
    assert r.merge(r.entries(), now=0) == []
    assert state(r) == before


def test_tombstone_beats_the_live_entry_it_removes() -> None:
    a, b = Records(A), Records(B)
    e = a.add("web.weave.local.", "netns:c1", "10.32.0.1", now=10)
    assert b.merge([e], now=10) == [e]
    assert b.lookup("WEB.weave.local.") == ["10.32.0.1"]
    (t,) = a.remove(20, container="netns:c1")
    assert not t.live and t.version == e.version + 1
    assert b.merge([t], now=20) == [t]
    assert b.lookup("web.weave.local.") == []
    assert b.merge([e], now=21) == []          # the stale live copy loses


@settings(max_examples=60)
@given(st.integers(0, 2**32), st.integers(1, 6))
def test_removed_name_never_returns_from_a_partitioned_peer(seed: int, rounds: int) -> None:
    """A adds, everyone learns it; B is cut off (its view of A is purged when A leaves its
    mesh); A removes; tombstones expire; the partition heals and everyone gossips full
    state in random order: the name is gone everywhere."""
    rng = random.Random(seed)
    peers = {n: Records(n) for n in (A, B, C)}
    e = peers[A].add("web.weave.local.", "netns:c1", "10.32.0.1", now=0)
    for n in (B, C):
        peers[n].merge([e], now=0)
    stale = list(peers[B].entries())          # what B held before the partition
    peers[B].purge_origin(A)                  # A became unreachable from B
    t = peers[A].remove(5, container="netns:c1")
    peers[C].merge(t, now=5)
    later = 5 + TOMBSTONE_TTL + 1
    for r in peers.values():
        r.expire(later)
    # stale copies in flight (or held by a peer that missed the purge) arrive too
    peers[C].merge(stale, now=later)
    for _ in range(rounds * 6):
        src, dst = rng.sample(list(peers), 2)
        peers[dst].merge(peers[src].entries(), now=later)
    for _ in range(3):                         # then converge: everyone to everyone
        for src in peers:
            for dst in peers:
                if src != dst:
                    peers[dst].merge(peers[src].entries(), now=later)
    for n, r in peers.items():
        assert r.lookup("web.weave.local.") == [], n


def test_origin_answers_a_stale_copy_of_its_own_entry_with_a_higher_version() -> None:
    a = Records(A)
    ghost = Entry("old.weave.local.", A, "netns:gone", "10.32.0.9", version=4)
    (fix,) = a.merge([ghost], now=50)
    assert fix.version == 5 and not fix.live
    b = Records(B)
    b.merge([ghost], now=50)
    b.merge([fix], now=50)
    assert b.lookup("old.weave.local.") == []
    # a live entry of ours, older than a copy elsewhere: ours is re-announced above it
    live = a.add("new.weave.local.", "netns:c1", "10.32.0.7", now=60)
    newer_tomb = Entry(*live.key, version=live.version + 3, tombstone=61)
    (again,) = a.merge([newer_tomb], now=62)
    assert again.live and again.version == live.version + 4


def test_readd_revives_with_a_higher_version() -> None:
    a = Records(A)
    e1 = a.add("web.weave.local.", "netns:c1", "10.32.0.1", now=1)
    assert a.add("web.weave.local.", "netns:c1", "10.32.0.1", now=2) is None   # already live
    a.remove(3, hostname="WEB.weave.local.")
    e2 = a.add("web.weave.local.", "netns:c1", "10.32.0.1", now=4)
    assert e2 is not None and e2.live and e2.version == e1.version + 2


def test_purge_drops_every_entry_of_a_peer_but_never_our_own() -> None:
    r = Records(A)
    r.add("web.weave.local.", "netns:c1", "10.32.0.1", now=1)
    r.merge([Entry("web.weave.local.", B, "netns:c2", "10.32.0.2"),
             Entry("db.weave.local.", B, "netns:c3", "10.32.0.3")], now=1)
    assert r.purge_origin(B) == 2
    assert r.purge_origin(A) == 0
    assert r.lookup("web.weave.local.") == ["10.32.0.1"] and r.origins() == {A}


def test_expire_drops_only_old_tombstones() -> None:
    r = Records(A)
    r.add("a.weave.local.", "netns:c1", "10.32.0.1", now=0)
    r.add("b.weave.local.", "netns:c2", "10.32.0.2", now=0)
    r.remove(100, container="netns:c1")
    assert r.expire(100 + TOMBSTONE_TTL - 1) == 0
    assert r.expire(100 + TOMBSTONE_TTL + 1) == 1
    assert len(r) == 1


def test_lookup_is_case_insensitive_and_collects_every_origin() -> None:
    r = Records(A)
    r.add("Web.Weave.Local.", "netns:c1", "10.32.0.1", now=0)
    r.merge([Entry("web.weave.local.", B, "netns:c2", "10.32.0.2"),
             Entry("WEB.weave.local.", C, "netns:c3", "10.32.0.3"),
             Entry("web.weave.local.", C, "netns:c4", "10.32.0.4", tombstone=5, version=2)], now=0)
    assert r.lookup("wEb.WEAVE.local.") == ["10.32.0.1", "10.32.0.2", "10.32.0.3"]
    assert r.has_suffix("weave.local.") and not r.has_suffix("other.local.")


def test_reverse_names_the_newest_owner_of_an_address() -> None:
    r = Records(A)
    r.add("old.weave.local.", "netns:c1", "10.32.0.5", now=10)
    r.merge([Entry("new.weave.local.", B, "netns:c9", "10.32.0.5", created=20_000)], now=20)
    assert r.reverse("10.32.0.5") == "new.weave.local."
    r.purge_origin(B)
    assert r.reverse("10.32.0.5") == "old.weave.local."
    r.remove(30, addr="10.32.0.5")
    assert r.reverse("10.32.0.5") is None


def test_shuffled_keeps_every_address_and_varies_the_order() -> None:
    addrs = [f"10.32.0.{i}" for i in range(1, 6)]
    rng = random.Random(1)
    orders = {tuple(shuffled(addrs, rng)) for _ in range(50)}
    assert all(sorted(o) == sorted(addrs) for o in orders)
    assert len(orders) > 10


# ---------------------------------------------------------------- wire

@given(st.lists(entries, max_size=20))
def test_wire_roundtrip(x: list[Entry]) -> None:
    assert wire.decode(wire.encode(x)) == x


@pytest.mark.parametrize("payload,why", [
    (b"\xc1", "undecodable"),
    (b"\x90", "not a map"),
    (b"\x81\xa1v\x02", "version 2 not understood"),
    (b"\x82\xa1v\x01\xa1e\x91\x93\x01\x02\x03", "malformed entry"),
])
def test_wire_refuses_bad_payloads_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        wire.decode(payload)


def test_wire_refuses_bad_fields() -> None:
    good = Entry("web.weave.local.", A, "netns:c1", "10.32.0.1")
    import msgpack
    for bad in (["we b.weave.local.", A, "c", b"\n\x20\x00\x01", 1, 0, 0],
                ["web.weave.local", A, "c", b"\n\x20\x00\x01", 1, 0, 0],
                ["web.weave.local.", "nope", "c", b"\n\x20\x00\x01", 1, 0, 0],
                ["web.weave.local.", A, "c", b"\n\x20\x00", 1, 0, 0],
                ["web.weave.local.", A, "c", b"\n\x20\x00\x01", 0, 0, 0],
                ["web.weave.local.", A, "c", b"\n\x20\x00\x01", 1, -1, 0],
                ["web.weave.local.", A, "c", b"\n\x20\x00\x01", True, 0, 0]):
        with pytest.raises(ProtocolError):
            wire.decode(msgpack.packb({"v": 1, "e": [bad]}))
    # a later version's extra fields are ignored
    extra = msgpack.packb({"v": 1, "e": [["web.weave.local.", A, "netns:c1", b"\n\x20\x00\x01", 1, 0, 0, "x"]]})
    assert wire.decode(extra) == [good]


@given(st.binary(max_size=200))
def test_wire_decode_never_raises_anything_but_protocol_error(data: bytes) -> None:
    try:
        wire.decode(data)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- names

def test_qualify_and_check_names() -> None:
    d = "weave.local."
    assert names.qualify("web", d) == "web.weave.local."
    assert names.qualify("Web.Weave.Local", d) == "Web.Weave.Local."
    assert names.qualify("a.b.weave.local.", d) == "a.b.weave.local."
    for bad in ("web.example.com", "weave.local", "bad name", "-x", "a" * 64, ""):
        with pytest.raises(UsageError):
            names.qualify(bad, d)
    assert names.label_from_target("netns:web1") == "web1"
    assert names.label_from_target("pid:42") is None
    assert names.reverse_to_ipv4("4.3.2.1.in-addr.arpa.") == "1.2.3.4"
    assert names.reverse_to_ipv4("4.3.2.in-addr.arpa.") is None
    assert names.reverse_to_ipv4("400.3.2.1.in-addr.arpa.") is None
    assert names.check_ipv4("10.32.1.1/12", "10.32.0.0/12") == "10.32.1.1"
    with pytest.raises(UsageError, match="outside the weave network"):
        names.check_ipv4("192.168.1.1", "10.32.0.0/12")
    with pytest.raises(UsageError, match="bad address"):
        names.check_ipv4("10.32.1", None)
