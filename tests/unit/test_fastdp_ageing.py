"""The pure MAC-ageing decision (weave_fdp/datapath/fastdp/ageing.py)."""

from __future__ import annotations

import pytest

from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.ageing import DEFAULT_AGEING_S, MacSeen, check_ageing, stale
from weave_fdp.errors import UsageError

L, LEARNED = abi.MacFlags.LOCAL, abi.MacFlags.LEARNED
S = 1_000_000_000


def test_default_is_the_bridge_default() -> None:
    assert DEFAULT_AGEING_S == 300.0


def test_only_learned_entries_older_than_the_ageing_time_are_stale() -> None:
    now = 1000 * S
    entries = [MacSeen("02:00:00:00:00:01", LEARNED, now - 301 * S),   # old: goes
               MacSeen("02:00:00:00:00:02", LEARNED, now - 300 * S),   # exactly the age: stays
               MacSeen("02:00:00:00:00:03", LEARNED, now - 5 * S),     # recent: stays
               MacSeen("02:00:00:00:00:04", L, 0),                     # local: never
               MacSeen("02:00:00:00:00:05", LEARNED, now + 5 * S),     # future stamp: stays
               MacSeen("02:00:00:00:00:00", LEARNED, 0)]               # unstamped: ages from boot
    assert stale(entries, now, 300.0) == ["02:00:00:00:00:00", "02:00:00:00:00:01"]


def test_ageing_time_bounds() -> None:
    assert check_ageing(2) == 2.0
    with pytest.raises(UsageError, match="MAC ageing time 0.5 s out of range"):
        check_ageing(0.5)
