"""The records' snapshot (what the DNS server threads read) says what the records say,
and is swapped after every change made through any of the records' mutators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.router.dns.records import Entry, Records
from weave_fdp.router.dns.snapshot import Snapshot, SnapshotRef

pytestmark = pytest.mark.unit

LOCAL, OTHER = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
NAMES = ["web.weave.local.", "WEB.weave.local.", "db.svc.weave.local.", "a.b.c.weave.local."]
ADDRS = ["10.32.0.1", "10.32.0.2", "10.32.0.10", "10.32.1.1"]

entries = st.builds(
    Entry,
    hostname=st.sampled_from(NAMES),
    origin=st.sampled_from([OTHER, "02:00:00:00:00:0c"]),
    container=st.sampled_from(["netns:c1", "netns:c2", "weave:extern"]),
    addr=st.sampled_from(ADDRS),
    version=st.integers(1, 5),
    tombstone=st.sampled_from([0, 0, 100]),
    created=st.integers(0, 3),
)


@given(st.lists(entries, max_size=20))
def test_snapshot_agrees_with_the_records(batch: list[Entry]) -> None:
    r = Records(LOCAL)
    r.merge(batch, now=0)
    snap = Snapshot.build(r.entries(), r.generation)
    for name in NAMES + ["svc.weave.local.", "b.c.weave.local.", "c.weave.local.", "nope.weave.local."]:
        assert list(snap.lookup(name)) == r.lookup(name)
        assert snap.has_below(name) == r.has_suffix(name)
    for a in ADDRS:
        assert snap.reverse(a) == r.reverse(a)


def test_every_mutator_swaps_the_snapshot() -> None:
    r = Records(LOCAL)
    ref = SnapshotRef(r)
    assert ref.current.lookup("web.weave.local.") == ()
    r.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)
    assert ref.current.lookup("WEB.weave.local.") == ("10.32.0.1",)
    r.merge([Entry("web.weave.local.", OTHER, "netns:x", "10.32.0.2")], now=1)
    assert ref.current.lookup("web.weave.local.") == ("10.32.0.1", "10.32.0.2")
    r.remove(2, container="netns:w")
    assert ref.current.lookup("web.weave.local.") == ("10.32.0.2",)
    r.purge_origin(OTHER)
    assert ref.current.lookup("web.weave.local.") == ()
    old = ref.current
    old.answers[b"k"] = [b"v"]
    r.expire(10_000)                                   # drops the tombstone: a change
    assert ref.current is not old and ref.current.answers == {}   # a new snapshot, a new cache
    same = ref.current
    r.merge([], now=1)                                 # no change: no new snapshot
    assert ref.current is same
