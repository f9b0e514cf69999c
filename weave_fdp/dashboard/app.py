"""Drivers of the dashboard: the live full-screen loop, one frame, JSON lines.

The live loop is single-threaded: it waits in ``select`` on the terminal (in
cbreak mode, so keys arrive one by one without Enter) until either a key comes
or the next refresh is due. Rendering happens only then, so an idle dashboard
costs one fetch, one parse and one paint per second.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live

from weave_fdp.dashboard.source import ReportSource
from weave_fdp.dashboard.state import Dashboard
from weave_fdp.dashboard.view import render_frame, render_report
from weave_fdp.errors import FdpError, UsageError


@contextlib.contextmanager
def cbreak(stream: TextIO) -> Iterator[int | None]:
    """Put the terminal in cbreak mode (keys without Enter, no echo); yield its fd or None."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield None
        return
    if not os.isatty(fd):
        yield None
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _sample(dash: Dashboard, source: ReportSource) -> None:
    try:
        report = source.fetch()
    except FdpError as exc:
        dash.fail(str(exc))
        return
    dash.ingest(report, time.monotonic())


def run_live(source: ReportSource, interval: float = 1.0, console: Console | None = None,
             count: int | None = None) -> None:
    """Full-screen live view until `q` (or ``count`` refreshes, for tests and benchmarks)."""
    console = console or Console(highlight=False)
    dash = Dashboard()
    first = source.fetch()  # fail fast, with the error's one line, if no router answers
    if not console.is_terminal:
        raise UsageError("the live view needs a terminal on stdout",
                         fix="use `weave-fdp top --once` or `--json` in scripts and pipes")
    dash.ingest(first, time.monotonic())
    refreshes = 1
    next_at = time.monotonic() + interval

    def frame() -> Any:
        # Ask the terminal itself every frame: resizes take effect at once, and a
        # stale COLUMNS/LINES in the environment (which rich prefers) cannot shrink the view.
        try:
            console.size = os.get_terminal_size(console.file.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        w, h = console.size
        return render_frame(dash, w, h)

    with cbreak(sys.stdin) as fd, Live(frame(), console=console, screen=True, auto_refresh=False,
                                       redirect_stdout=False, redirect_stderr=False) as live:
        while not dash.ui.quit:
            if count is not None and refreshes >= count:
                break
            wait = max(0.0, next_at - time.monotonic())
            if fd is not None:
                ready, _, _ = select.select([fd], [], [], wait)
            else:
                time.sleep(wait)
                ready = []
            if ready:
                data = os.read(fd, 64).decode(errors="replace")  # type: ignore[arg-type]
                if not data:  # the terminal went away
                    break
                for ch in data:
                    dash.key(ch)
                live.update(frame(), refresh=True)
                continue
            next_at += interval
            if next_at < time.monotonic():  # fell behind (suspended, slow router): do not burst
                next_at = time.monotonic() + interval
            if not dash.ui.paused:
                _sample(dash, source)
            refreshes += 1
            live.update(frame(), refresh=True)


def run_once(source: ReportSource, console: Console, flows: int = 20) -> None:
    """One frame, every panel at its natural height, to stdout."""
    dash = Dashboard()
    dash.ingest(source.fetch(), time.monotonic())
    console.print(render_report(dash, console.width, flows=flows))


def iter_json(source: ReportSource, interval: float, count: int | None,
              flows: int | None) -> Iterator[dict[str, Any]]:
    """Frames as dicts (``top --json``), one per ``interval``; rates from the second on.

    The first fetch fails loudly (no router: one line and exit 3); later failures
    are reported in the frame's "error" and the stream goes on.
    """
    dash = Dashboard()
    n = 0
    next_at = time.monotonic()
    while count is None or n < count:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = time.monotonic() + interval
        try:
            report = source.fetch()
        except FdpError as exc:
            if n == 0:
                raise
            dash.fail(str(exc))
        else:
            dash.ingest(report, time.monotonic())
        n += 1
        yield dash.to_json(flows)
