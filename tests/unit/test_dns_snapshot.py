"""The records' snapshot (what the DNS server threads read) says what the records say,
and is swapped after every change made through any of the records' mutators."""

from __future__ import annotations

from collections.abc import Callable

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


class FakeLoop:
    """``call_later`` and a clock under the test's control; a rebuild costs ``cost`` s."""

    def __init__(self) -> None:
        self.now = 100.0
        self.calls: list[tuple[float, Callable[[], None]]] = []
        self.cost = 0.0

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.calls.append((self.now + delay, fn))

    def run_due(self) -> int:
        due = [c for c in self.calls if c[0] <= self.now]
        self.calls = [c for c in self.calls if c[0] > self.now]
        for _, fn in due:
            fn()
        return len(due)


def coalescing_ref(loop: FakeLoop) -> tuple[Records, SnapshotRef, list[Snapshot]]:
    r = Records(LOCAL)
    ref = SnapshotRef(r, clock=loop.clock)
    ref.schedule = loop.call_later
    shipped: list[Snapshot] = []

    def ship(s: Snapshot) -> None:              # shipping takes the rebuild's time, as building does
        loop.now += loop.cost
        shipped.append(s)
    ref.on_swap.append(ship)
    return r, ref, shipped


def test_cheap_rebuilds_run_at_once_and_dear_ones_coalesce() -> None:
    loop = FakeLoop()
    r, ref, shipped = coalescing_ref(loop)
    r.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)        # few names: at once
    assert ref.current.lookup("web.weave.local.") == ("10.32.0.1",) and loop.calls == []
    loop.cost = 0.03                            # a large set of records: 30 ms to build and ship
    r.add("a.weave.local.", "netns:a", "10.32.0.2", now=1)          # the last one was cheap: at once
    assert len(shipped) == 2 and loop.calls == []
    for i in range(50):                         # 50 changes while that rebuild's cost is not yet paid back
        r.add(f"c{i}.weave.local.", f"netns:c{i}", f"10.32.1.{i + 1}", now=1)
    assert ref.current.lookup("c0.weave.local.") == ()              # not yet: scheduled, once
    assert len(loop.calls) == 1 and loop.calls[0][0] == pytest.approx(loop.now + 0.03)
    loop.now += 0.03
    assert loop.run_due() == 1
    assert len(shipped) == 3 and ref.current.generation == r.generation
    assert ref.current.lookup("c49.weave.local.") == ("10.32.1.50",)
    assert ref.built == 3 and ref.coalesced == 49
    r.merge([], now=1)                          # no change: nothing scheduled
    assert loop.calls == []


def test_rebuilds_take_at_most_about_half_of_the_time_however_fast_records_change() -> None:
    loop = FakeLoop()
    loop.cost = 0.03                            # a large set of records: 30 ms to build and ship
    r, ref, shipped = coalescing_ref(loop)
    busy = 0.0
    for i in range(1, 201):                     # a change every 5 ms for a second
        r.add(f"c{i}.weave.local.", f"netns:c{i}", f"10.32.{i // 250}.{i % 250 + 1}", now=1)
        before = loop.now
        loop.run_due()
        busy += loop.now - before
        loop.now += 0.005
    loop.now += 1.0
    loop.run_due()
    assert ref.current.generation == r.generation                  # the last change is served
    assert ref.current.lookup("c200.weave.local.") != ()
    assert len(shipped) < 200 / 4 and ref.built == len(shipped)    # far fewer than the changes
    assert busy <= 0.6 * (loop.now - 100.0)                          # the owner keeps about half its time


def test_flush_builds_what_is_scheduled_and_without_schedule_changes_rebuild_at_once() -> None:
    loop = FakeLoop()
    loop.cost = 0.03
    r, ref, shipped = coalescing_ref(loop)
    r.add("web.weave.local.", "netns:w", "10.32.0.1", now=1)        # at once (nothing built before)
    r.add("api.weave.local.", "netns:a", "10.32.0.3", now=1)        # scheduled
    assert ref.current.lookup("api.weave.local.") == () and len(loop.calls) == 1
    ref.flush()
    assert ref.current.lookup("api.weave.local.") == ("10.32.0.3",) and len(shipped) == 2
    loop.now += 1
    assert loop.run_due() == 1 and len(shipped) == 2               # the scheduled call finds nothing to do
    ref.schedule = None
    r.add("db.weave.local.", "netns:d", "10.32.0.2", now=1)
    assert ref.current.lookup("db.weave.local.") == ("10.32.0.2",) and loop.calls == []
