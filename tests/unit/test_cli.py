"""Generic CLI behaviour over whatever commands are registered: version, help with examples,
usage errors and typed errors as one line with their exit code, completion, broken pipes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from weave_fdp import __version__
from weave_fdp.cli.main import cli, main
from weave_fdp.errors import ExitCode, FdpError, KernelFeatureMissing, NotFound, PermissionDenied


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


ALL_COMMANDS = [((), cli), *_walk(cli)]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    out = capsys.readouterr()
    return int(ei.value.code or 0), out.out, out.err


@pytest.fixture
def temp_command() -> Iterator[click.Group]:
    """Lets a test register throw-away commands on the real group; removes them afterwards."""
    before = dict(cli.commands)
    yield cli
    for name in set(cli.commands) - set(before):
        del cli.commands[name]


def test_version() -> None:
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"weave-fdp, version {__version__}"


def test_some_commands_are_registered() -> None:
    assert {"probe", "completion"} <= set(cli.commands)


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS,
                         ids=[" ".join(p) or "weave-fdp" for p, _ in ALL_COMMANDS])
def test_help_on_every_command_has_an_example(path: tuple[str, ...], command: click.Command) -> None:
    """Every registered command and subcommand: --help works and shows an example.

    Iterates over whatever is registered, so a new command without an example fails here.
    Where ``-h`` is an option of the command (the DNS name, in Weave's grammar), only --help.
    """
    h_is_option = any("-h" in p.opts for p in command.params if isinstance(p, click.Option))
    for flag in ("--help",) if h_is_option else ("--help", "-h"):
        res = CliRunner().invoke(cli, [*path, flag], env={"COLUMNS": "120"})
        assert res.exit_code == 0, res.output
        assert "Usage:" in res.output
        assert "Example" in res.output, f"`weave-fdp {' '.join(path)} --help` shows no Example"


@pytest.mark.parametrize("argv", [["no-such-command"], ["probe", "--no-such-option"],
                                  ["--log-level", "loud", "probe"], ["completion", "tcsh"]])
def test_usage_errors_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_main(argv, capsys)
    assert code == ExitCode.USAGE == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "--help" in lines[0]
    assert out == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script(shell: str) -> None:
    res = CliRunner().invoke(cli, ["completion", shell])
    assert res.exit_code == 0
    assert "_WEAVE_FDP_COMPLETE" in res.output
    if shell == "bash":
        assert "complete -o nosort -F" in res.output or "complete " in res.output


def test_completion_completes_commands(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The script's protocol really answers: `weave-fdp pro<TAB>` -> probe."""
    monkeypatch.setenv("_WEAVE_FDP_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "weave-fdp pro")
    monkeypatch.setenv("COMP_CWORD", "1")
    with pytest.raises(SystemExit):
        cli.main(args=[], prog_name="weave-fdp", complete_var="_WEAVE_FDP_COMPLETE")
    assert "plain,probe" in capsys.readouterr().out


@pytest.mark.parametrize("error", [
    FdpError("something broke"),
    NotFound("no namespace 'x'", fix="run `weave-fdp lab up`"),
    PermissionDenied("cannot create namespaces", fix="run as root"),
    KernelFeatureMissing("no VXLAN"),
])
def test_typed_error_is_one_line_with_its_exit_code(temp_command: click.Group, error: FdpError,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    @temp_command.command("boom-test")
    def boom() -> None:
        raise error

    code, out, err = _run_main(["boom-test"], capsys)
    assert code == error.exit_code
    assert err.strip().splitlines() == [f"error: {error}"]
    assert "Traceback" not in err and out == ""


def test_ctx_exit_code_is_kept(temp_command: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    @temp_command.command("exit-test")
    @click.pass_context
    def exit_test(ctx: click.Context) -> None:
        ctx.exit(ExitCode.PROBE_SLEEVE_ONLY)

    assert _run_main(["exit-test"], capsys)[0] == ExitCode.PROBE_SLEEVE_ONLY


FLOOD = """
import click
from weave_fdp.cli.main import cli, main

@cli.command("flood")
def flood() -> None:
    for i in range(200000):
        click.echo('{"row": %d}' % i)

main(["flood"])
"""


def test_broken_pipe_exits_quietly() -> None:
    """`weave-fdp ... --json | head -1`: the reader goes away; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-c", FLOOD], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b'{"row": 0}')
    proc.stdout.close()
    err = proc.stderr.read().decode()
    # click itself catches EPIPE (even with standalone_mode=False) and exits 1, quietly
    assert proc.wait(timeout=30) in (ExitCode.OK, ExitCode.FAILURE), err
    assert err == ""


def test_root_help_documents_exit_codes() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert "Exit codes" in res.output and "10 sleeve only" in res.output


def test_probe_help_documents_its_exit_codes() -> None:
    res = CliRunner().invoke(cli, ["probe", "--help"])
    assert "--json" in res.output and "--dev" in res.output
    assert "10 only sleeve" in res.output and "11 neither" in res.output


def test_stop_that_does_not_happen_is_an_error_not_a_silent_carry_on(monkeypatch) -> None:
    """reset goes on to remove the state only once the router is gone."""
    from weave_fdp.cli.commands import router as router_cmd
    from weave_fdp.errors import FdpError

    class Stubborn:
        def call(self, op: str, **kw: object) -> dict:
            assert op == "stop"
            return {"stopping": True, "pid": 4242}

        def running(self) -> bool:
            return True

    monkeypatch.setattr(router_cmd, "STOP_WAIT_S", 0.1)
    with pytest.raises(FdpError, match=r"pid 4242\) is still running .*kill 4242"):
        router_cmd._stop(Stubborn())   # type: ignore[arg-type]
