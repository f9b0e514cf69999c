"""Shared output helpers for CLI commands: JSON, rich consoles, one-line errors."""

from __future__ import annotations

import json
import sys
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
