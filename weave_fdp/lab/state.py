"""The lab's small state file, so a new process (``lab status``/``exec``/``down``) finds a lab.

One JSON file per lab: ``<runtime root>/lab/<prefix>.json``, written atomically
(temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from weave_fdp import paths
from weave_fdp.errors import FdpError

STATE_VERSION = 1


def state_root() -> Path:
    """Directory holding one JSON file per lab (``/run/weave-fdp/lab`` by default)."""
    return paths.RUNTIME_ROOT / "lab"


def state_path(prefix: str) -> Path:
    return state_root() / f"{prefix}.json"


@dataclass
class LabState:
    """Everything needed to find and operate a lab from another process."""

    prefix: str
    hosts: int
    topology: str
    mtu: int = 1500
    containers: dict[int, int] = field(default_factory=dict)  # host -> number of container namespaces
    routers: bool = False  # routers were launched: `down` resets them first
    cuts: list[tuple[int, int]] = field(default_factory=list)
    udp_blocks: list[tuple[int, int, int]] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["containers"] = {str(k): v for k, v in self.containers.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LabState:
        if d.get("version") != STATE_VERSION:
            raise FdpError(f"lab state of {d.get('prefix')!r} has version {d.get('version')!r}, "
                           f"expected {STATE_VERSION}", fix="tear it down with `weave-fdp lab down --prefix P`")
        return cls(
            prefix=str(d["prefix"]),
            hosts=int(d["hosts"]),
            topology=str(d["topology"]),
            mtu=int(d.get("mtu", 1500)),
            containers={int(k): int(v) for k, v in d.get("containers", {}).items()},
            routers=bool(d.get("routers", False)),
            cuts=[(int(a), int(b)) for a, b in d.get("cuts", [])],
            udp_blocks=[(int(a), int(b), int(p)) for a, b, p in d.get("udp_blocks", [])],
        )


def save(state: LabState) -> Path:
    """Write the state atomically; returns its path."""
    path = state_path(state.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{state.prefix}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load(prefix: str) -> LabState | None:
    """The saved state of lab ``prefix``, or None when there is none (or it is unreadable)."""
    try:
        with open(state_path(prefix)) as f:
            return LabState.from_json(json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign file: treat as absent; `down` removes it


def remove(prefix: str) -> bool:
    """Delete the state file; False when it was already gone."""
    try:
        state_path(prefix).unlink()
    except FileNotFoundError:
        return False
    return True


def known_prefixes() -> list[str]:
    """Prefixes of every lab with a state file."""
    try:
        return sorted(p.stem for p in state_root().glob("*.json"))
    except FileNotFoundError:
        return []
