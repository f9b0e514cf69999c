"""Entry point of the ``weave-fdp`` command line.

Commands live in ``weave_fdp.cli.commands.*``; each module exposes ``COMMANDS``.
Typed errors (``FdpError``) become one line on stderr and a documented exit code.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import sys

import click

from weave_fdp import __version__
from weave_fdp.errors import ExitCode, FdpError

LOG_LEVELS = ["debug", "info", "warning", "error"]

EXIT_CODES_HELP = """
Exit codes: 0 ok, 1 failure, 2 usage, 3 router not running, 4 already exists,
5 permission (run as root), 6 kernel feature missing, 7 not found,
8 dependency missing; probe: 10 sleeve only, 11 neither path.
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="weave-fdp")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Log level (default warning; -v means info, -vv debug).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, verbose: int) -> None:
    """Overlay network for containers with an eBPF/XDP fast datapath.

    \b
    Examples:
      weave-fdp probe                 can this kernel run the fast path?
      weave-fdp lab up --hosts 3      three hosts in namespaces on this machine
      weave-fdp launch 192.0.2.1      start this host's router, join a peer
      weave-fdp status connections    connections and their mode
    """
    if log_level is None:
        log_level = {0: "warning", 1: "info"}.get(verbose, "debug")
    level = getattr(logging, log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), default="bash")
def completion(shell: str) -> None:
    """Print the shell completion script.

    \b
    Example:
      eval "$(weave-fdp completion bash)"
    """
    from click.shell_completion import get_completion_class

    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # the Choice above admits only known shells
    comp = comp_cls(cli, {}, "weave-fdp", "_WEAVE_FDP_COMPLETE")
    click.echo(comp.source())


def _register_commands() -> None:
    from weave_fdp.cli import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register_commands()


def _invoke(args: list[str]) -> object:
    """What ``click.Command.main`` does, minus its own error handling.

    click's main turns a broken pipe into a silent exit 1 and usage errors into
    several lines; we want exit 0 for ``... --json | head`` and one-line errors.
    """
    cli._main_shell_completion({}, "weave-fdp", "_WEAVE_FDP_COMPLETE")
    with cli.make_context("weave-fdp", args) as ctx:
        return cli.invoke(ctx)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map typed errors to one line and an exit code."""
    try:
        code = _invoke(sys.argv[1:] if argv is None else list(argv))
        # ctx.exit(n) surfaces as a returned code here rather than an exit.
        if isinstance(code, int) and not isinstance(code, bool) and code != ExitCode.OK:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.FAILURE)
    except click.UsageError as exc:
        # One line, like every other error: what is wrong and where to look.
        where = exc.ctx.command_path if exc.ctx else "weave-fdp"
        click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FdpError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # A closed pipe (`weave-fdp ... --json | head`) is not an error: exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(ExitCode.OK)
    except OSError as exc:
        if exc.errno == errno.EPERM or exc.errno == errno.EACCES:
            click.echo(f"error: {exc.strerror}: {exc.filename or ''}; run as root", err=True)
            sys.exit(ExitCode.PERMISSION)
        raise
    sys.exit(ExitCode.OK)


if __name__ == "__main__":
    main()
