"""`weave-fdp lab` bad input: one line, documented exit code, nothing built (no root needed)."""

from __future__ import annotations

import pytest

from weave_fdp.cli.main import main
from weave_fdp.errors import ExitCode


@pytest.mark.parametrize(("args", "message"), [
    (["lab", "up", "--topology", "mesh"], "unknown topology 'mesh'"),
    (["lab", "up", "--hosts", "0"], "cannot build a lab of 0 hosts"),
    (["lab", "up", "--hosts", "251"], "cannot build a lab of 251 hosts"),
    (["lab", "up", "--containers", "-1"], "containers"),
    (["lab", "up", "--prefix", "a-b"], "bad lab prefix"),
    (["lab", "demo", "--topology", "tree"], "unknown topology 'tree'"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(args)
    assert ei.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.parametrize("sub", ["up", "status", "exec", "down", "demo"])
def test_help_has_examples(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["lab", sub, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "Example" in out and "Exit codes" in out
