"""RateLimitedLog: once per cause per interval, suppressed events counted and reported."""

from __future__ import annotations

import logging

import pytest

from weave_fdp.ratelog import MAX_CAUSES, RateLimitedLog

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_once_per_interval_then_reports_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        assert rl.warning("bad frame", "bad frame from %s", "192.0.2.9")
        for _ in range(999):
            assert not rl.warning("bad frame", "bad frame from %s", "192.0.2.9")
        assert rl.warning("other", "another cause")      # causes are independent
        clock.t += 10
        assert rl.warning("bad frame", "bad frame from %s", "192.0.2.9")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad frame from 192.0.2.9", "another cause",
                     "bad frame from 192.0.2.9 (and 999 more of this kind in the last 10 s)"]
    assert rl.total == {"bad frame": 1001, "other": 1}


def test_memory_is_bounded() -> None:
    rl = RateLimitedLog(logging.getLogger("t.ratelog.bound"), clock=Clock())
    for i in range(MAX_CAUSES * 3):
        rl.info(f"cause {i}", "x")
    assert len(rl._causes) <= MAX_CAUSES and len(rl.total) <= MAX_CAUSES
