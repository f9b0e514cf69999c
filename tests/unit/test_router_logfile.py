"""The background router's log file is rotated at its cap; stdout/stderr follow the current file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from weave_fdp.router.logfile import RouterLogHandler


def test_log_is_capped_and_stray_output_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "router.log"
    stray = os.open(tmp_path / "placeholder", os.O_WRONLY | os.O_CREAT)   # stands in for fd 2
    handler = RouterLogHandler(path, max_bytes=4096, backups=2, fds=(stray,))
    try:
        for i in range(2000):        # a flood of ~150 kB of log lines (straight to the handler:
            # the handler alone is under test)
            handler.handle(logging.makeLogRecord({"msg": "connection from 192.0.2.66:%d failed: not a weave-fdp peer",
                                                  "args": (40000 + i,), "levelno": logging.WARNING}))
        os.write(stray, b"Traceback: written by a crash after the rotations\n")
    finally:
        handler.close()
        os.close(stray)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("router.log"))
    assert files == ["router.log", "router.log.1", "router.log.2"]
    assert all((tmp_path / f).stat().st_size <= 4096 + 200 for f in files)
    assert "Traceback: written by a crash" in path.read_text()
