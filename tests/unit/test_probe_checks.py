"""Probe checks' decision logic without privileges: capabilities, headers, BTF, helper verdicts,
bcc rows, and the `probe` command's rendering and exit codes over a given report."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from weave_fdp.cli.commands import probe as probe_cmd
from weave_fdp.cli.main import cli
from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.errors import ExitCode
from weave_fdp.probe import bpf_checks, checks, system_checks
from weave_fdp.probe import model as m
from weave_fdp.probe.model import Check, ProbeReport

ROOT_STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
USER_STATUS = "Name:\tpython\nCapEff:\t0000000000000000\n"


def test_capabilities_root_and_user() -> None:
    root = system_checks.check_capabilities(ROOT_STATUS)
    assert root.ok and "CAP_BPF yes" in root.detail and not root.fix
    user = system_checks.check_capabilities(USER_STATUS)
    assert user.ok is False and "CAP_NET_ADMIN no" in user.detail and "root" in user.fix


def test_capabilities_sys_admin_without_cap_bpf_is_enough() -> None:
    """Kernels before 5.8 have no CAP_BPF; CAP_SYS_ADMIN + CAP_NET_ADMIN load programs there."""
    eff = (1 << system_checks.CAP_SYS_ADMIN) | (1 << system_checks.CAP_NET_ADMIN)
    assert system_checks.check_capabilities(f"CapEff:\t{eff:016x}\n").ok
    only_net_admin = 1 << system_checks.CAP_NET_ADMIN
    assert not system_checks.check_capabilities(f"CapEff:\t{only_net_admin:016x}\n").ok


def test_parse_capeff_missing() -> None:
    assert system_checks.parse_capeff("Name: x\n") is None


def _modules(tmp_path: Path, build: bool, source: bool, split: bool = True) -> Path:
    """A fake /lib/modules/<release> with Debian-style split headers under tmp_path/src."""
    root = tmp_path / "modules"
    rel = root / "9.9.9-1-amd64"
    rel.mkdir(parents=True)
    amd64 = tmp_path / "src" / "linux-headers-9.9.9-1-amd64"
    common = tmp_path / "src" / "linux-headers-9.9.9-1-common"
    amd64.mkdir(parents=True)
    (common / "include" / "linux").mkdir(parents=True)
    if not split:
        (amd64 / "include" / "linux").mkdir(parents=True)
    if build:
        (rel / "build").symlink_to(amd64)
    if source:
        (rel / "source").symlink_to(common)
    return root


def test_headers_found_names_where(tmp_path: Path) -> None:
    c = system_checks.check_headers("9.9.9-1-amd64", str(_modules(tmp_path, True, True)))
    assert c.ok and "linux-headers-9.9.9-1-amd64" in c.detail and "-common" in c.detail
    assert "differ" not in c.detail and "bcc compile decides" not in c.detail


def test_headers_missing_gives_the_fix(tmp_path: Path) -> None:
    c = system_checks.check_headers("9.9.9-1-amd64", str(_modules(tmp_path, False, False)))
    assert c.ok is False and "build missing" in c.detail
    assert "linux-headers-amd64" in c.fix and "make install" in c.fix


def test_headers_split_without_source_fails(tmp_path: Path) -> None:
    c = system_checks.check_headers("9.9.9-1-amd64", str(_modules(tmp_path, True, False)))
    assert c.ok is False and "no include/linux" in c.detail


def test_headers_dangling_link(tmp_path: Path) -> None:
    root = tmp_path / "modules" / "9.9.9-1-amd64"
    root.mkdir(parents=True)
    (root / "build").symlink_to(tmp_path / "nowhere")
    c = system_checks.check_headers("9.9.9-1-amd64", str(tmp_path / "modules"))
    assert c.ok is False and "dangling" in c.detail


def test_headers_other_version_is_noted(tmp_path: Path) -> None:
    c = system_checks.check_headers("9.9.9-1-amd64", str(_modules(tmp_path, True, True)))
    assert c.ok
    os.rename(tmp_path / "modules" / "9.9.9-1-amd64", tmp_path / "modules" / "10.1.0-x")
    c = system_checks.check_headers("10.1.0-x", str(tmp_path / "modules"))
    assert c.ok and "bcc compile decides" in c.detail


def test_btf_magic(tmp_path: Path) -> None:
    good = tmp_path / "vmlinux"
    good.write_bytes(b"\x9f\xeb\x01\x00" + bytes(100))
    assert system_checks.check_btf(str(good)).ok
    bad = tmp_path / "bad"
    bad.write_bytes(b"ELF!")
    assert system_checks.check_btf(str(bad)).ok is False
    missing = system_checks.check_btf(str(tmp_path / "none"))
    assert missing.ok is False and "CONFIG_DEBUG_INFO_BTF" in missing.fix


@pytest.mark.parametrize(("err", "log", "ok"), [
    (errno.EINVAL, "0: (85) call unknown#155\ninvalid func unknown#155\n", False),
    (errno.EINVAL, "unknown func bpf_redirect_peer#155\n", False),
    (errno.EINVAL, "program of this type cannot use helper bpf_xdp_adjust_head#44\n", False),
    (errno.EACCES, "0: (85) call bpf_redirect#23\nR2 !read_ok\n", True),
    (errno.EPERM, "", None),
])
def test_helper_verdict_from_verifier_log(monkeypatch: pytest.MonkeyPatch, err: int, log: str,
                                          ok: bool | None) -> None:
    def fake_load(*_a: object, **_k: object) -> int:
        raise bpf.BpfSyscallError(err, "BPF_PROG_LOAD", log)

    monkeypatch.setattr(bpf, "prog_load", fake_load)
    c = bpf_checks.check_helper("redirect_peer")
    assert c.ok is ok and c.name == "helper redirect_peer"
    if ok is False:
        assert "5.10" in c.fix


@pytest.mark.parametrize(("sysctl", "jited", "ok"), [
    ("1", 20, True), ("2", 20, True), ("0", 0, False), ("1", 0, False), ("1", -1, True)])
def test_jit_verdicts(tmp_path: Path, sysctl: str, jited: int, ok: bool) -> None:
    path = tmp_path / "bpf_jit_enable"
    path.write_text(sysctl + "\n")
    c = bpf_checks.check_jit(jited, str(path))
    assert c.ok is ok
    if not ok:
        assert c.fix == "sysctl -w net.core.bpf_jit_enable=1"
    # the sysctl exists only in the initial netns; the JIT image still answers
    assert bpf_checks.check_jit(20, str(tmp_path / "none")).ok is True
    assert bpf_checks.check_jit(0, str(tmp_path / "none")).ok is False
    assert bpf_checks.check_jit(-1, str(tmp_path / "none")).ok is None


def test_bcc_rows() -> None:
    good_headers = Check(m.HEADERS, True, "x")
    bad_headers = Check(m.HEADERS, False, "missing", system_checks.HEADERS_FIX)
    rows = checks.bcc_checks({"importable": True, "version": "0.26.0", "compiled": True}, "", good_headers)
    assert [c.ok for c in rows] == [True, True] and "0.26.0" in rows[0].detail
    rows = checks.bcc_checks({"importable": False, "error": "ModuleNotFoundError: bcc"}, "", good_headers)
    assert rows[0].ok is False and "python3-bpfcc" in rows[0].fix and rows[1].ok is None
    rows = checks.bcc_checks({"importable": True, "compiled": False,
                              "error": "Exception: Failed to compile BPF module"}, "", bad_headers)
    assert rows[1].ok is False and rows[1].fix == system_checks.HEADERS_FIX
    rows = checks.bcc_checks(None, "bcc check did not finish within 15 s", good_headers)
    assert [c.ok for c in rows] == [None, None] and "15 s" in rows[0].detail


def _fake_report(**bad: Check) -> ProbeReport:
    names = [m.CAPS, m.BPF_SYSCALL, m.BCC, m.BCC_COMPILE, m.PROG_SCHED_CLS,
             *[m.helper_check(h) for h in m.HELPERS], *m.MAP_CHECKS.values(), m.CLSACT, m.VXLAN,
             m.BRIDGE, m.AF_PACKET, m.UDP]
    rows = {n: Check(n, True, "ok") for n in names}
    rows[m.ESP] = Check(m.ESP, False, "no AEAD", "modprobe esp4")
    for c in bad.values():
        rows[c.name] = c
    return ProbeReport(checks=list(rows.values()), duration_s=0.25)


@pytest.mark.parametrize(("bad", "code", "line"), [
    ({}, ExitCode.OK, "fastdp: available"),
    ({"a": Check(m.VXLAN, False, "no vxlan")}, ExitCode.PROBE_SLEEVE_ONLY,
     "fastdp: unavailable: VXLAN collect-md: no vxlan"),
    ({"a": Check(m.BRIDGE, False, "no bridge")}, ExitCode.PROBE_NOTHING,
     "sleeve: unavailable: bridge: no bridge"),
])
def test_probe_command_table_verdict_and_exit_code(monkeypatch: pytest.MonkeyPatch, bad: dict[str, Check],
                                                   code: ExitCode, line: str) -> None:
    monkeypatch.setattr(probe_cmd, "run_probe", lambda dev=None: _fake_report(**bad))
    res = CliRunner().invoke(cli, ["probe"], env={"COLUMNS": "200"})
    assert res.exit_code == code, res.output
    for word in ("check", "result", "detail", "fix", "ESP/XFRM crypto", "no (optional)", "modprobe esp4"):
        assert word in res.output
    assert line in res.output.splitlines()


def test_probe_command_json_is_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def fake(dev: str | None = None) -> ProbeReport:
        seen.append(dev)
        return _fake_report(a=Check(m.AF_PACKET, False, "no raw"), b=Check(m.BCC, False, "none"))

    monkeypatch.setattr(probe_cmd, "run_probe", fake)
    res = CliRunner().invoke(cli, ["probe", "--json", "--dev", "eth7"])
    assert res.exit_code == ExitCode.PROBE_NOTHING
    data = json.loads(res.output)
    assert data == _fake_report(a=Check(m.AF_PACKET, False, "no raw"), b=Check(m.BCC, False, "none")).to_dict()
    assert seen == ["eth7"]
