"""Persistent router state: peer name, short ID, direct peers (atomic JSON files).

Files in the state dir (default weave_fdp.paths.state_dir(), --state-dir overrides):
  peer.json          {"name": "7e:..", "short_id": 123}
  direct-peers.json  {"peers": ["192.0.2.1:6783", ...]}
Each write goes to a temporary file that is fsynced and renamed over the old one,
so a crash leaves either the old or the new content, never a torn file; what was
written is copied to <file>.prev, from which a file damaged anyway (disk, hand edits) is
recovered, or launch stops naming it (router/statefile.py).
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
from weave_fdp.router.mesh.codec import PEER_NAME_RE
from weave_fdp.router.statefile import Check, atomic_write_bytes, keep_copy, load_json

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

    def _read(self, name: str, check: Check, what: str, fix: str) -> dict[str, Any]:
        """A state file's content ({} when absent); a damaged file is recovered from its
        previous copy (and said so) or stops the launch naming it (statefile.load_json)."""
        return load_json(self.dir / name, check, what=what, fix=fix) or {}

    def load_peer(self) -> dict[str, Any]:
        return self._read(PEER_FILE, _check_peer, "peer identity",
                          f"to keep this host's peer name, restore {PEER_FILE} from a backup or launch with "
                          f"--name NAME; to take a new identity, remove {self.dir / PEER_FILE}")

    def save_peer(self, name: str, short_id: int) -> None:
        atomic_write_json(self.dir / PEER_FILE, {"name": name, "short_id": short_id})
        keep_copy(self.dir / PEER_FILE)

    def load_direct(self) -> list[str]:
        return list(self._read(DIRECT_FILE, _check_direct, "direct peers",
                               f"launch with the peers to dial (weave-fdp launch HOST...), which replaces "
                               f"{self.dir / DIRECT_FILE}").get("peers", []))

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
        keep_copy(self.dir / DIRECT_FILE)


def _check_peer(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("name"), str) or not PEER_NAME_RE.match(data["name"]):
        return "no valid peer name"
    sid = data.get("short_id")
    if sid is not None and (type(sid) is not int or not 0 <= sid < 4096):
        return "short_id is not 0-4095"
    return None


def _check_direct(data: Any) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("peers"), list):
        return "not a JSON object with a list of peers"
    if not all(isinstance(p, str) for p in data["peers"]):
        return "a peer is not a string"
    return None
