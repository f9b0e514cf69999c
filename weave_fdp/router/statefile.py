"""Reading the router's state files so that damage is never silent.

Every state file is written atomically (atomic_write_bytes), and right after each
write ``keep_copy`` copies it to ``<file>.prev`` (atomically too, a separate inode: a file
truncated or edited in place leaves its copy intact). ``load_json`` then reads a file:

- absent: None (a fresh start);
- good (valid JSON that passes the file's ``check``): its content;
- damaged (truncated, not JSON, or failing ``check``): the damaged file is kept as
  ``<file>.corrupt``; if ``<file>.prev`` is good, the file is restored from it, the
  recovery is logged and remembered in ``recovered()`` (the report's
  ``router.state_recovered``, which ``launch`` prints as warnings); otherwise
  ``StateFileCorrupt`` names the file, what is wrong and the fix, and launch stops.

A caller that can rebuild a file from what the kernel shows (the container records)
passes ``rebuild``, which gets the previous good copy (or None) as a hint and is used
instead of it: it never fails.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weave_fdp.errors import FdpError

log = logging.getLogger(__name__)

PREV_SUFFIX = ".prev"
CORRUPT_SUFFIX = ".corrupt"
MAX_STATE_BYTES = 16 << 20   # a state file larger than this is damage, not state

Check = Callable[[Any], "str | None"]   # None when the content is acceptable, else what is wrong

_RECOVERED: list[str] = []


class StateFileCorrupt(FdpError):
    """A state file is damaged and there is no good copy to recover it from."""


def recovered() -> list[str]:
    """What was recovered since this process started (one sentence each)."""
    return list(_RECOVERED)


def _note(msg: str) -> None:
    log.warning("%s", msg)
    _RECOVERED.append(msg)
    del _RECOVERED[:-20]


def _parse(path: Path, check: Check) -> tuple[Any, str | None]:
    """(content, None) when good, (None, what is wrong) otherwise; FileNotFoundError when absent."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            return None, f"larger than {MAX_STATE_BYTES >> 20} MiB"
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"not valid JSON ({str(exc)[:80]})" if path.stat().st_size else "empty"
    why = check(data)
    return (data, None) if why is None else (None, why)


def keep_copy(path: Path) -> None:
    """Right after ``path`` was written: copy it to ``<path>.prev`` (atomically, its own inode,
    so damage to one never reaches the other). A crash in between leaves the copy one write
    behind, which is still a good copy."""
    try:
        atomic_write_bytes(path.with_name(path.name + PREV_SUFFIX), path.read_bytes())
    except OSError as exc:
        log.warning("cannot keep a copy of %s: %s", path, exc.strerror)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new content: temporary
    file, fsync, rename over, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_json(path: Path, check: Check, *, what: str, fix: str,
              rebuild: Callable[[Any], tuple[Any, str]] | None = None) -> Any:
    """The content of state file ``path`` (None when absent); see the module doc.

    ``what`` names the file's role ("peer identity"); ``fix`` says what the user can do when
    nothing good is left; ``rebuild(previous good content or None)`` returns (content, where it
    came from), and is used instead of the previous copy when given.
    """
    try:
        data, why = _parse(path, check)
    except FileNotFoundError:
        return None
    if why is None:
        return data
    corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, corrupt)
    except OSError:
        corrupt = path
    prev = path.with_name(path.name + PREV_SUFFIX)
    try:
        good, prev_why = _parse(prev, check)
    except FileNotFoundError:
        good, prev_why = None, "absent"
    source = f"its previous good copy {prev}"
    if rebuild is not None:   # the kernel is the truth: rebuild, with the previous copy as a hint
        good, source = rebuild(good if prev_why is None else None)
    elif prev_why is not None:
        raise StateFileCorrupt(f"{what} file {path} is damaged ({why}; kept as {corrupt.name}) and its "
                               f"previous copy {prev.name} is {prev_why}", fix=fix)
    atomic_write_bytes(path, json.dumps(good, indent=1, sort_keys=True).encode())
    _note(f"{what} file {path} was damaged ({why}); recovered from {source}; "
          f"the damaged file is kept as {corrupt}")
    return good
