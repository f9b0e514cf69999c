"""`weave-fdp bench datapath`: options are checked, saved results render (no root, no measuring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from weave_fdp.bench import datapath, results
from weave_fdp.cli.main import cli, main
from weave_fdp.errors import UsageError


def _saved(tmp_path: Path) -> Path:
    s = results.Samples()
    for p, g, lat in (("underlay", 12.0, 18.0), ("vxlan", 8.0, 29.0), ("fastdp", 9.6, 25.5)):
        s.add("tcp1_gbps", p, g)
        s.add("rr_p50_us", p, lat)
    keys = ["underlay", "vxlan", "fastdp"]
    summary = results.summarize(s, keys)
    res = {"meta": {"date": "2026-01-01T00:00:00+00:00", "kernel": "6.x", "cpus": 2, "rounds": 1, "seconds": 3,
                    "idle_load_cpus": 0.1, "elapsed_s": 10},
           "paths": {k: {"title": results.PATHS[k], "mtu": 1450} for k in keys},
           "metrics": summary,
           "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in results.checks(summary)],
           "errors": []}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(res))
    return path


def test_load_renders_the_table_checks_and_markdown(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["bench", "datapath", "--load", str(_saved(tmp_path)), "--markdown"],
                             terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "kernel VXLAN + bridge" in out.output and "1.20× vx" in out.output
    assert "ok  floor: fastdp TCP 1 stream (pinned) ≥ 1.00× kernel VXLAN: 1.20×" in out.output
    assert "verdict, fastdp TCP 1 stream pinned: floor met, aims 1 of 2 not met" in out.output
    assert "| TCP 1 stream (Gbit/s) | 12.00<br>1.50× vx<br>1.00× ul | 8.00<br>1.00× vx" in out.output


def test_load_refuses_a_file_that_is_not_a_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "datapath", "--load", str(bad)])
    assert exc.value.code == 2
    assert "is not a saved datapath benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("kw, words", [
    ({"rounds": 0}, "--rounds 0"),
    ({"seconds": 0.5}, "--seconds 0.5"),
    ({"paths": ["vxlan", "calico"]}, "unknown path calico"),
    ({"tests": ["tcp9"]}, "unknown test tcp9"),
])
def test_options_are_checked_before_anything_is_built(kw: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        datapath.Options(**kw).check()


def test_tcp1_runs_twice_per_round_in_a_b_b_a_order() -> None:
    assert datapath.Options().repeats == {"tcp1": 2, "tcp1u": 2}   # pinned and unpinned
    assert "tcp1u" in datapath.Options().tests
    assert datapath.run_order(["vxlan", "fastdp"], 2) == ["vxlan", "fastdp", "fastdp", "vxlan"]
    assert datapath.run_order(["u", "v", "f"], 3) == ["u", "v", "f", "f", "v", "u", "u", "v", "f"]
    assert datapath.run_order(["u", "v"], 1) == ["u", "v"]
    with pytest.raises(UsageError, match="repeats tcp1=0 out of range"):
        datapath.Options(repeats={"tcp1": 0}).check()


def test_the_command_runs_every_test_by_default() -> None:
    """`make bench` runs the command with its defaults: they must include the unpinned rounds."""
    from weave_fdp.cli.commands.bench_datapath import datapath_cmd

    tests = next(p for p in datapath_cmd.params if p.name == "tests")
    assert tests.default.split(",") == list(datapath.TESTS)
    assert "tcp1u" in datapath.TESTS
