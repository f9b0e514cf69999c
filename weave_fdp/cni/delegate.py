"""Delegation to another CNI plugin (an IPAM plugin named in the configuration), as the
spec's delegation protocol says: the same environment with CNI_COMMAND set, the same
network configuration on stdin, the plugin found in CNI_PATH; its error passes through.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from weave_fdp.cni.spec import E_DECODE, E_INVALID_CONFIG, E_IO, CniError, Request

TIMEOUT = 60.0   # seconds an IPAM plugin may take (DHCP can be slow)


def find_plugin(name: str, path: list[str]) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise CniError(E_INVALID_CONFIG, f"ipam.type {name[:60]!r} is not a plugin name")
    for d in path:
        exe = os.path.join(d, name)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    raise CniError(E_INVALID_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH ({':'.join(path) or 'empty'})",
                   "install it (e.g. Debian's containernetworking-plugins) or fix ipam.type / CNI_PATH")


def run_plugin(req: Request, name: str, command: str, env: dict[str, str]) -> dict[str, Any] | None:
    """Run plugin ``name`` for ``command``; its decoded stdout (None when empty)."""
    exe = find_plugin(name, req.path)
    penv = {**env, "CNI_COMMAND": command}
    try:
        cp = subprocess.run([exe], input=req.raw_config, env=penv, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CniError(E_IO, f"IPAM plugin {name} did not finish {command} within {TIMEOUT:g} s") from None
    except OSError as exc:
        raise CniError(E_IO, f"cannot run IPAM plugin {exe}: {exc.strerror}") from None
    out = cp.stdout.strip()
    data: Any = None
    if out:
        try:
            data = json.loads(out)
        except ValueError:
            raise CniError(E_DECODE, f"IPAM plugin {name} printed no JSON for {command}",
                           out[:200].decode(errors="replace")) from None
    if cp.returncode != 0:
        if isinstance(data, dict) and isinstance(data.get("code"), int):
            raise CniError(data["code"], f"IPAM plugin {name}: {data.get('msg', 'failed')}",
                           str(data.get("details", "")))
        raise CniError(E_IO, f"IPAM plugin {name} failed {command} (exit {cp.returncode})",
                       cp.stderr.decode(errors="replace").strip()[:300])
    return data if isinstance(data, dict) else None
