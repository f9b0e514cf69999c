"""Where reports come from: the local router's API, or a recorded file (replay).

Both return the ``report`` dict exactly as ``weave-fdp report --json`` prints it.
A replay file holds one report, a JSON array of reports, or JSON lines (one
report per line, as ``top --json`` does not write but ``report --json`` loops
can); it is replayed in a loop, one report per fetch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from weave_fdp.errors import NotFound, RouterNotRunning, UsageError

START_HINT = "start it with `weave-fdp launch` (or `weave-fdp lab up` for a lab)"


class ReportSource(Protocol):
    def fetch(self) -> Any: ...

    @property
    def label(self) -> str: ...


class RouterSource:
    """The router of this host's network namespace, through its local API."""

    label = "router"

    def __init__(self) -> None:
        try:
            from weave_fdp.router.client import RouterClient
        except ImportError as exc:  # the router package is not built yet in this tree
            raise RouterNotRunning("no router API client in this install", fix=START_HINT) from exc
        # A short timeout: a wedged router shows as an error in the header, not a frozen screen.
        self._client = RouterClient(timeout=5.0)

    def fetch(self) -> Any:
        try:
            return self._client.call("report")
        except RouterNotRunning as exc:
            if exc.fix:
                raise
            raise RouterNotRunning(exc.message, fix=START_HINT) from exc


class ReplaySource:
    """Recorded reports from a file, replayed in a loop (``top --demo-file``).

    Each report is kept as JSON text and decoded on every fetch, so a replay costs
    what a real API call costs the dashboard (the figures in the README use this).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = f"replay of {self.path.name}"
        try:
            text = self.path.read_text()
        except FileNotFoundError as exc:
            raise NotFound(f"replay file {self.path} does not exist",
                           fix="pass a report recorded with `weave-fdp report --json > FILE`") from exc
        except OSError as exc:
            raise UsageError(f"cannot read replay file {self.path}: {exc.strerror}") from exc
        self._frames = self._split(text)
        self._i = 0

    def _split(self, text: str) -> list[str]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
            lines = [ln for ln in text.splitlines() if ln.strip()]
            try:
                frames = [json.dumps(json.loads(ln)) for ln in lines]
            except json.JSONDecodeError as exc:
                raise UsageError(f"replay file {self.path} is not JSON or JSON lines (line {exc.lineno})",
                                 fix="record one with `weave-fdp report --json > FILE`") from exc
            if frames:
                return frames
        if isinstance(doc, list) and doc:
            return [json.dumps(d) for d in doc]
        if isinstance(doc, dict):
            return [json.dumps(doc)]
        raise UsageError(f"replay file {self.path} holds no report",
                         fix="record one with `weave-fdp report --json > FILE`")

    def __len__(self) -> int:
        return len(self._frames)

    def fetch(self) -> Any:
        frame = self._frames[self._i % len(self._frames)]
        self._i += 1
        return json.loads(frame)


def open_source(demo_file: str | None) -> RouterSource | ReplaySource:
    return ReplaySource(demo_file) if demo_file else RouterSource()
