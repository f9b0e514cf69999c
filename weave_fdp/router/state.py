"""Persistent router state: peer name, short ID, direct peers (atomic JSON files).

Files in the state dir (default weave_fdp.paths.state_dir(), --state-dir overrides):
  peer.json          {"name": "7e:..", "short_id": 123}
  direct-peers.json  {"peers": ["192.0.2.1:6783", ...]}
Each write goes to a temporary file that is fsynced and renamed over the old one,
so a crash leaves either the old or the new content, never a torn file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from weave_fdp.errors import FdpError, PermissionDenied

log = logging.getLogger(__name__)

PEER_FILE = "peer.json"
DIRECT_FILE = "direct-peers.json"


def random_peer_name(rng: random.Random | None = None) -> str:
    """A locally administered unicast MAC (like Weave's peer names)."""
    rng = rng or random.SystemRandom()
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] | 0x02) & 0xFE
    return ":".join(f"{o:02x}" for o in octets)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


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


class RouterState:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def ensure_writable(self) -> None:
        """Create the dir and prove we can write it; a typed error naming it otherwise."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.dir / f".write-test{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            msg = f"state dir {self.dir} is not writable: {exc.strerror}"
            fix = "choose another with --state-dir"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise PermissionDenied(msg, fix=fix + " or run as root") from exc
            raise FdpError(msg, fix=fix) from exc

    def _read(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def load_peer(self) -> dict[str, Any]:
        return self._read(PEER_FILE)

    def save_peer(self, name: str, short_id: int) -> None:
        atomic_write_json(self.dir / PEER_FILE, {"name": name, "short_id": short_id})

    def load_direct(self) -> list[str]:
        peers = self._read(DIRECT_FILE).get("peers", [])
        return [p for p in peers if isinstance(p, str)] if isinstance(peers, list) else []

    def initial_targets(self, given: list[str], *, resume: bool) -> list[str]:
        """The target list a starting router dials, with Weave's semantics.

        ``launch PEERS`` (resume False) sets the list to PEERS, replacing the saved one.
        ``launch --resume`` and a restart by a supervisor keep the list as it was last
        saved (after connect/forget); PEERS then only seed it when nothing was saved yet.
        """
        if resume and (self.dir / DIRECT_FILE).exists():
            return self.load_direct()
        self.save_direct(given)
        return list(dict.fromkeys(given))

    def save_direct(self, peers: list[str]) -> None:
        atomic_write_json(self.dir / DIRECT_FILE, {"peers": sorted(set(peers))})
