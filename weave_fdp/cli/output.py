"""Shared output helpers for CLI commands: JSON, rich consoles, one-line errors."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def err_console() -> Console:
    global _err_console
    if _err_console is None:
        _err_console = Console(stderr=True, highlight=False)
    return _err_console


def print_json(data: Any) -> None:
    """One JSON document on stdout (sorted keys, so diffs and greps are stable)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_json_line(data: Any) -> None:
    """One compact JSON document per line, flushed (for streams)."""
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def host_matrix(n: int, title: str, label: Callable[[int], str], cell: Callable[[int, int], str], *,
                header: Callable[[int], str] | None = None, justify: str = "center",
                caption: str | None = None, diagonal: str = "-") -> Any:
    """A rich table of hosts 1..n against hosts 1..n (rows "from", columns "to"):
    ``label(i)`` names row i, ``header(j)`` column j (default: the label),
    ``cell(i, j)`` fills i != j and ``diagonal`` the rest."""
    from rich.table import Table

    t = Table(title=title, caption=caption)
    t.add_column("from \\ to")
    for j in range(1, n + 1):
        t.add_column((header or label)(j), justify=justify)  # type: ignore[arg-type]
    for i in range(1, n + 1):
        t.add_row(label(i), *(diagonal if i == j else cell(i, j) for j in range(1, n + 1)))
    return t


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_interruptible(fn: Callable[[], Any], torn_down: str) -> Any:
    """``fn()`` for a long run that builds labs (benchmarks): a kill (SIGTERM) tears down
    like Ctrl-C; either prints ``interrupted: <torn_down>`` and exits 130."""
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return fn()
    except KeyboardInterrupt:
        err_console().print(f"interrupted: {torn_down}", markup=False)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, old)
