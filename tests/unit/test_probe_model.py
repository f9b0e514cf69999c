"""The probe's pure model: verdicts from required checks, exit codes, JSON shape."""

from __future__ import annotations

import json

import pytest

from weave_fdp.errors import ExitCode
from weave_fdp.probe import model as m
from weave_fdp.probe.checks import _order
from weave_fdp.probe.model import REQUIREMENTS, Check, ProbeReport

ALL_NAMES = [m.KERNEL, m.BPF_SYSCALL, m.JIT, m.BTF, m.CAPS, m.BCC, m.HEADERS, m.BCC_COMPILE,
             m.PROG_SCHED_CLS, m.PROG_XDP, *[m.helper_check(h) for h in m.HELPERS],
             *m.MAP_CHECKS.values(), m.CLSACT, m.TCX, m.VXLAN, m.XDP_VETH, m.BRIDGE, m.AF_PACKET, m.UDP, m.ESP,
             m.BIG_TCP]


def report(**overrides: Check) -> ProbeReport:
    """Every check passing, except ``overrides`` (keyed by check name)."""
    by_name = {name: Check(name, True, "fine") for name in ALL_NAMES}
    for check in overrides.values():
        by_name[check.name] = check
    return ProbeReport(checks=list(by_name.values()), duration_s=0.5)


def test_all_passing_means_both_available_exit_0() -> None:
    r = report()
    assert r.fastdp_available and r.sleeve_available
    assert r.fastdp_reason is None and r.sleeve_reason is None
    assert r.verdict_lines() == ["fastdp: available", "sleeve: available"]
    assert r.exit_code == ExitCode.OK == 0


def test_optional_failure_keeps_fastdp_available() -> None:
    r = report(esp=Check(m.ESP, False, "no AEAD"), jit=Check(m.JIT, False, "off"),
               xdp=Check(m.XDP_VETH, False, "nope"), peer=Check(m.helper_check("redirect_peer"), False, "old"))
    assert r.fastdp_available and r.exit_code == ExitCode.OK
    assert r.required_for(m.ESP) == []


@pytest.mark.parametrize("name", REQUIREMENTS["fastdp"])
def test_each_fastdp_requirement_failing_makes_it_unavailable(name: str) -> None:
    r = report(x=Check(name, False, "broken here"))
    assert not r.fastdp_available
    assert r.fastdp_reason == f"{name}: broken here"
    assert f"fastdp: unavailable: {name}: broken here" in r.verdict_lines()
    if name in REQUIREMENTS["sleeve"]:
        assert r.exit_code == ExitCode.PROBE_NOTHING
    else:
        assert r.sleeve_available and r.exit_code == ExitCode.PROBE_SLEEVE_ONLY == 10


@pytest.mark.parametrize("name", REQUIREMENTS["sleeve"])
def test_sleeve_requirement_failing(name: str) -> None:
    r = report(x=Check(name, False, "gone"))
    assert r.sleeve_reason == f"{name}: gone"
    assert "sleeve: unavailable: " + f"{name}: gone" in r.verdict_lines()


def test_neither_path_exits_11() -> None:
    r = report(a=Check(m.BCC, False, "no bcc"), b=Check(m.AF_PACKET, False, "no CAP_NET_RAW"))
    assert r.exit_code == ExitCode.PROBE_NOTHING == 11
    assert r.verdict_lines() == ["fastdp: unavailable: bcc importable: no bcc",
                                 "sleeve: unavailable: AF_PACKET capture/inject: no CAP_NET_RAW"]


def test_sleeve_failing_alone_still_exit_0() -> None:
    r = report(a=Check(m.UDP, False, "no udp"))
    assert r.fastdp_available and not r.sleeve_available and r.exit_code == ExitCode.OK


def test_skipped_required_check_is_a_reason_that_says_not_checked() -> None:
    r = report(a=Check(m.CLSACT, None, "needs root"))
    assert r.fastdp_reason == f"{m.CLSACT} not checked (needs root)"
    assert not r.fastdp_available


def test_missing_required_check_counts_as_not_checked() -> None:
    r = ProbeReport(checks=[Check(m.CAPS, True)])
    assert r.fastdp_reason == f"{m.BPF_SYSCALL} not checked"


def test_reason_is_the_first_failing_requirement_in_order() -> None:
    """Root causes first: no privileges explains everything after it."""
    r = report(a=Check(m.CLSACT, False, "x"), b=Check(m.CAPS, False, "not root"))
    assert r.fastdp_reason == f"{m.CAPS}: not root"


def test_requirements_name_real_checks() -> None:
    for names in REQUIREMENTS.values():
        assert set(names) <= set(ALL_NAMES)
    assert m.ESP not in REQUIREMENTS["fastdp"]


def test_json_shape_and_round_trip() -> None:
    r = report(e=Check(m.ESP, False, "no AEAD", "modprobe esp4"))
    data = json.loads(json.dumps(r.to_dict()))
    assert set(data) == {"checks", "fastdp", "sleeve", "verdict", "exit_code", "duration_s"}
    assert data["fastdp"] == {"available": True, "reason": None}
    assert data["exit_code"] == 0 and data["duration_s"] == 0.5
    esp = next(c for c in data["checks"] if c["name"] == m.ESP)
    assert esp == {"name": m.ESP, "ok": False, "result": "no", "detail": "no AEAD",
                   "fix": "modprobe esp4", "required_for": []}
    caps = next(c for c in data["checks"] if c["name"] == m.CAPS)
    assert caps["required_for"] == ["fastdp"]
    bridge = next(c for c in data["checks"] if c["name"] == m.BRIDGE)
    assert bridge["required_for"] == ["fastdp", "sleeve"]
    assert Check.from_dict(esp) == Check(m.ESP, False, "no AEAD", "modprobe esp4")


def test_skipped_result_word_and_json_null() -> None:
    c = Check(m.VXLAN, None, "needs root", "run as root")
    assert c.result == "skipped" and c.to_dict()["ok"] is None


def test_display_order_is_stable_and_dev_goes_last() -> None:
    shuffled = [Check(m.dev_check("eth1"), True)] + [Check(n, True) for n in reversed(ALL_NAMES)]
    names = [c.name for c in _order(shuffled)]
    assert names[:-1] == ALL_NAMES and names[-1] == "native XDP on eth1"
