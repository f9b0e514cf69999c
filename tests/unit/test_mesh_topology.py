"""Topology merge: versions, incarnations, self-reassertion, GC, short-ID conflicts."""

from __future__ import annotations

import random
from dataclasses import replace

from weave_fdp.router.mesh.codec import ConnEntry, PeerEntry
from weave_fdp.router.mesh.topology import Topology

A, B, C = "7e:00:00:00:00:0a", "7e:00:00:00:00:0b", "7e:00:00:00:00:0c"


def entry(name: str, version: int = 1, uid: int = 1, inc: int = 100, sid: int = 1, conns: tuple = ()) -> PeerEntry:
    return PeerEntry(name, name[-2:], uid, inc, version, sid, tuple(ConnEntry(p, "192.0.2.9:6783", True, True) for p in conns))


def test_higher_version_wins_and_older_is_ignored() -> None:
    t = Topology(entry(A, sid=10, conns=(B,)))
    assert t.apply([entry(B, 2, sid=11)]) == ([B], False)
    assert t.apply([entry(B, 1, sid=11)]) == ([], False)
    assert t.apply([entry(B, 2, sid=11)]) == ([], False)
    assert t.apply([entry(B, 3, sid=11)]) == ([B], False)
    assert t.peers[B].version == 3


def test_new_incarnation_beats_higher_version() -> None:
    t = Topology(entry(A, sid=10, conns=(B,)))
    t.apply([entry(B, 50, uid=1, inc=100)])
    changed, _ = t.apply([entry(B, 1, uid=2, inc=200)])  # restarted: new uid, version starts again
    assert changed == [B] and t.peers[B].uid == 2
    assert t.apply([entry(B, 99, uid=1, inc=100)]) == ([], False)  # stale copy of the old one


def test_stale_copy_of_ourselves_makes_us_jump() -> None:
    t = Topology(entry(A, version=3, uid=5, inc=100))
    changed, bumped = t.apply([entry(A, version=9, uid=5, inc=100)])
    assert bumped and t.local.version == 10
    # an older incarnation of us with a bigger version: our copy must still win afterwards
    changed, bumped = t.apply([entry(A, version=500, uid=4, inc=50)])
    assert bumped and t.local.key() > entry(A, version=500, uid=4, inc=50).key()
    # a copy claiming a newer incarnation (name collision / clock step): we reassert past it
    changed, bumped = t.apply([entry(A, version=1, uid=9, inc=1000)])
    assert bumped and t.local.key() > entry(A, version=1, uid=9, inc=1000).key() and t.local.uid == 5


def test_set_local_connections_bumps_only_on_change() -> None:
    t = Topology(entry(A))
    conns = [ConnEntry(B, "192.0.2.2:6783", True, True)]
    assert t.set_local_connections(conns) and t.local.version == 2
    assert not t.set_local_connections(conns) and t.local.version == 2


def test_gc_removes_unreachable_after_grace() -> None:
    t = Topology(entry(A, conns=(B,)))
    t.apply([entry(B, conns=(A, C)), entry(C, conns=(B,)), entry("7e:00:00:00:00:0d")])
    gone, due = t.garbage_collect(now=0.0, grace=3.0)
    assert gone == [] and due == 3.0  # 0d is unreachable but within grace
    gone, due = t.garbage_collect(now=3.0, grace=3.0)
    assert gone == ["7e:00:00:00:00:0d"] and due is None
    t.set_local_connections([])  # we lose B: B and C unreachable
    assert t.garbage_collect(now=10.0, grace=0.0)[0] == [B, C]
    assert set(t.peers) == {A}


def test_short_id_conflict_smaller_name_keeps_it() -> None:
    tb = Topology(entry(B, sid=7))
    tb.apply([entry(A, sid=7)])
    assert tb.resolve_short_id(random.Random(1))
    assert tb.local.short_id != 7 and tb.local.version == 2
    ta = Topology(entry(A, sid=7))
    ta.apply([entry(B, sid=7)])
    assert not ta.resolve_short_id() and ta.local.short_id == 7


def test_choose_short_id_avoids_used() -> None:
    t = Topology(entry(A, sid=0))
    t.apply([replace(entry(f"7e:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}", sid=i)) for i in range(1, 4000)])
    for seed in range(20):
        assert t.choose_short_id(random.Random(seed)) >= 4000


def test_copy_of_ourselves_at_the_u64_limits_never_overflows() -> None:
    """A (forged) copy of us whose version, or incarnation and version, are 2**64 - 1:
    we move to a new incarnation, or keep ours; never a key that cannot be encoded."""
    from dataclasses import replace

    from weave_fdp.router.mesh import codec
    from weave_fdp.router.mesh.codec import PeerEntry

    top = 2 ** 64 - 1
    local = PeerEntry("7e:00:00:00:00:01", "me", 5, 10, 3, 1, ())
    t = Topology(local)
    changed, bumped = t.apply([replace(local, version=top)])
    assert bumped and t.local.key() == (11, 1, 5)
    assert codec.decode_topology_v3(codec.encode_topology_v3([t.local])) == [t.local]
    changed, bumped = t.apply([replace(local, incarnation=top, version=top, uid=9)])
    assert not bumped and t.local.key() == (11, 1, 5)
