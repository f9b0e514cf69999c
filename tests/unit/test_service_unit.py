"""The systemd unit and `weave-fdp setup --root` (files only): contents, idempotence, and
systemd's own verifier on the unit."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from weave_fdp.cli.main import cli
from weave_fdp.service import systemd

EXE = "/usr/local/bin/weave-fdp"


def unit_sections(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read_string(text)
    return cp


def test_unit_runs_the_router_in_the_foreground_restarted_on_failure_after_the_network() -> None:
    u = unit_sections(systemd.render_unit(EXE))
    assert u["Unit"]["After"] == "network-online.target" and u["Unit"]["Wants"] == "network-online.target"
    assert u["Service"]["ExecStart"] == f"{EXE} launch --foreground --resume $WEAVE_PEERS"
    assert u["Service"]["Restart"] == "on-failure" and u["Service"]["Type"] == "simple"
    assert u["Service"]["RestartPreventExitStatus"] == "2 4 5 8"
    assert u["Service"]["EnvironmentFile"] == "-/etc/default/weave-fdp"
    assert u["Install"]["WantedBy"] == "multi-user.target"
    with pytest.raises(Exception):
        systemd.render_unit("weave-fdp")   # systemd needs an absolute path


def test_setup_into_a_root_is_idempotent_and_keeps_the_admins_env(tmp_path: Path) -> None:
    run = CliRunner().invoke
    res = run(cli, ["setup", "--root", str(tmp_path), "--no-enable", "--cni-conf", "192.0.2.1", "192.0.2.2:6783"])
    assert res.exit_code == 0, res.output
    assert res.output.count("installed ") == 4
    unit = tmp_path / "etc/systemd/system/weave-fdp.service"
    env = tmp_path / "etc/default/weave-fdp"
    assert 'WEAVE_PEERS="192.0.2.1 192.0.2.2:6783"' in env.read_text() and env.stat().st_mode & 0o077 == 0
    assert (tmp_path / "opt/cni/bin/weave-fdp-cni").exists()
    assert '"weave-fdp-cni"' in (tmp_path / "etc/cni/net.d/10-weave-fdp.conflist").read_text()
    env.write_text('WEAVE_PEERS="192.0.2.9"\n')
    res = run(cli, ["setup", "--root", str(tmp_path), "--no-enable", "192.0.2.1"])
    assert res.exit_code == 0 and "installed" not in res.output and res.output.count("unchanged") == 3
    assert env.read_text() == 'WEAVE_PEERS="192.0.2.9"\n'
    assert "launch --foreground --resume" in unit.read_text()


def test_setup_refuses_a_bad_peer_and_writes_nothing(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["setup", "--root", str(tmp_path), "--no-enable", "192.0.2.1:99999"])
    assert res.exit_code != 0 and not any(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt-get install systemd)")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    exe = shutil.which("sh")   # any executable: verify checks that ExecStart's program exists
    assert exe
    unit = tmp_path / systemd.UNIT_NAME
    unit.write_text(systemd.render_unit(exe))
    cp = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "weave-fdp" not in cp.stderr, cp.stderr
