"""The sleeve's drop reasons: a closed set in fastdp's naming scheme; details go to the
log (rate-limited), never into the name a report or a Prometheus label shows."""

from __future__ import annotations

import ast
import errno
import logging
from pathlib import Path

import pytest

from weave_fdp.datapath.fastdp.abi import DROP_NAMES
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.drops import Drops, SleeveDrop
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.state import GSO_REFUSED

SLEEVE = Path(__file__).resolve().parents[2] / "weave_fdp" / "datapath" / "sleeve"
PEER = bytes.fromhex("7e0000000002")


def test_names_follow_fastdps_scheme() -> None:
    for r in SleeveDrop:
        assert r.value == r.name.lower().replace("_", "-") and str(r) == r.value
    assert {"truncated", "no-route", "wrong-source", "unknown-peer"} <= set(DROP_NAMES.values()) & \
        {r.value for r in SleeveDrop}


def test_every_drop_in_the_sleeve_names_a_reason_of_the_set() -> None:
    """No string, no f-string: ``drop(SleeveDrop.X, ...)``, or a reason carried by a WireError
    or a decision (both typed SleeveDrop)."""
    calls = []
    for path in sorted(SLEEVE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("drop", "WireError") \
                    or isinstance(node, ast.Call) and getattr(node.func, "id", None) == "WireError":
                first = node.args[0]
                calls.append((path.name, node.lineno, ast.unparse(first)))
    assert len(calls) > 40
    bad = [c for c in calls if not (c[2].startswith("SleeveDrop.") or c[2] in ("exc.cause", "reason", "cause", "bug"))]
    assert bad == []


class _Refusing:
    def __init__(self, err: int) -> None:
        self.err = err

    def sendmsg(self, *_a: object) -> int:
        raise OSError(self.err, "refused")

    def setsockopt(self, *_a: object) -> None:
        pass


def _forwarder(err: int) -> Forwarder:
    fw = Forwarder(bytes.fromhex("7e0000000001"), "unused0")
    fw.set_peers({PEER: ("192.0.2.2", wire.PORT)})
    fw.usock = _Refusing(err)     # type: ignore[assignment]
    return fw


def test_a_send_error_counts_under_one_name_and_logs_its_errno_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    fw = _forwarder(errno.ENETUNREACH)
    with caplog.at_level(logging.WARNING, logger="weave_fdp.sleeve"):
        for _ in range(50):
            fw._send(fw.links[PEER], b"\x01")
    assert fw.drops.snapshot() == {"send-error": 50}
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "send-error: ENETUNREACH to 7e:00:00:00:00:02" in lines[0], lines


@pytest.mark.parametrize("err,reason", [(errno.EMSGSIZE, "too-big"), (errno.EAGAIN, "send-queue-full")])
def test_known_send_errors_have_their_own_names(err: int, reason: str) -> None:
    fw = _forwarder(err)
    fw._send(fw.links[PEER], b"\x01")
    assert fw.drops.snapshot() == {reason: 1} and fw.links[PEER].stats["tx_pkts"] == 0


def test_a_refused_gso_train_turns_gso_off_and_is_no_drop() -> None:
    fw = _forwarder(errno.EIO)
    assert fw._sendmsg(fw.links[PEER], [b"x" * 100, b"y" * 100], segments=2, seg=100) is GSO_REFUSED
    assert not fw.udp_gso and fw.drops.snapshot() == {}


def test_later_drops_of_a_reason_are_logged_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    d = Drops(interval=0.0)
    with caplog.at_level(logging.WARNING, logger="weave_fdp.sleeve"):
        d.drop(SleeveDrop.REPLAY, "seq 5")
        d.drop(SleeveDrop.REPLAY, "seq 6")
    assert d.snapshot() == {"replay": 2} and len(caplog.records) == 2
