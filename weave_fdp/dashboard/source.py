"""Where reports come from: the local router's API, or a recorded file (replay).

Both return the ``report`` dict exactly as ``weave-fdp report --json`` prints it
(the router source asks for changed flows only and keeps the table itself).
A replay file holds one report, a JSON array of reports, or JSON lines (one
report per line, as ``top --json`` does not write but ``report --json`` loops
can); it is replayed in a loop, one report per fetch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from weave_fdp.dashboard.flow_cache import FlowCache
from weave_fdp.errors import NotFound, RouterNotRunning, UsageError

START_HINT = "start it with `weave-fdp launch` (or `weave-fdp lab up` for a lab)"


class ReportSource(Protocol):
    def fetch(self) -> Any: ...

    @property
    def label(self) -> str: ...


class RouterSource:
    """The router of this host's network namespace, through its local API.

    It asks with the ``top`` op (only the changed flow rows, folded into a copy of
    the table: dashboard/flow_cache.py); a router older than that op gets ``report``
    (the whole table each time), as before.
    """

    label = "router"

    def __init__(self, client: Any = None, clock: Any = time.monotonic) -> None:
        from weave_fdp.router.client import RouterClient

        # A short timeout: a wedged router shows as an error in the header, not a frozen screen.
        self._client = client or RouterClient(timeout=5.0)
        self._clock = clock
        self._cache = FlowCache()
        self.deltas = True    # False once the router said it has no "top" op

    def fetch(self) -> Any:
        try:
            if self.deltas:
                try:
                    asked = self._cache.request(self._clock())
                    return self._cache.merge(self._client.call("top", **asked), asked, self._clock())
                except UsageError as exc:
                    if not exc.message.startswith("unknown API op"):
                        raise
                    self.deltas = False   # an older router: the full report from now on
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
