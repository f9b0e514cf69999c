"""The background router's log file: rotated at a size cap, so no amount of logging fills the disk.

``weave-fdp launch`` starts the router with its stdout and stderr on ``router.log`` and
names that file in WEAVE_FDP_ROUTER_LOG. The router logs through ``RouterLogHandler``: at
LOG_MAX_BYTES the file becomes ``router.log.1`` (the older ``.1`` becomes ``.2``, and so on
up to LOG_BACKUPS), and the process's stdout and stderr are moved onto the new file, so
tracebacks and startup errors land in the current file too. At most
(1 + LOG_BACKUPS) * LOG_MAX_BYTES of log exist at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_ENV = "WEAVE_FDP_ROUTER_LOG"
LOG_MAX_BYTES = 10 << 20     # bytes per file
LOG_BACKUPS = 2              # rotated files kept beside it


class RouterLogHandler(RotatingFileHandler):
    """A RotatingFileHandler whose current file also receives the file descriptors ``fds``."""

    def __init__(self, path: Path, *, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS,
                 fds: Sequence[int] = (1, 2)) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.fds = tuple(fds)
        self._redirect()

    def doRollover(self) -> None:
        super().doRollover()
        self._redirect()

    def _redirect(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        self.stream.flush()
        for fd in self.fds:
            os.dup2(self.stream.fileno(), fd)
