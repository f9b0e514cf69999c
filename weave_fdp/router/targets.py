"""Attach targets: which network namespace a target names (Weave's grammar plus what CNI passes).

``netns:NAME`` (a named namespace), ``pid:PID`` (any process's namespace), a namespace
path (``/run/netns/NAME``, ``/proc/PID/ns/net``: what CNI passes), or a Docker/Podman
container id or name, looked up through the engine's API socket
(weave_fdp.engine.docker_api). Used by attach/detach/ps and by the DNS ops.
"""

from __future__ import annotations

import re
from pathlib import Path

from weave_fdp.errors import NotFound, UsageError


def resolve_target(target: str, docker_host: str | None = None) -> str:
    """The path of the target's network namespace."""
    return resolve(target, docker_host)[0]


def resolve(target: str, docker_host: str | None = None) -> tuple[str, str]:
    """(path of the target's network namespace, what ``ps`` calls it)."""
    if not isinstance(target, str) or not target:
        raise UsageError("no target given", fix="use netns:NAME, pid:PID or a container name")
    if target.startswith("/"):
        if not re.match(r"^/(proc/\d+/ns/net|(var/)?run/netns/[A-Za-z0-9][A-Za-z0-9_.-]{0,250})$", target):
            raise UsageError(f"{target[:80]!r} is not a network namespace path",
                             fix="give /run/netns/NAME or /proc/PID/ns/net")
        if not Path(target).exists():
            raise NotFound(f"network namespace {target} does not exist", fix="check the path")
        return target, target
    if target.startswith("netns:") or target.startswith("pid:"):
        return _resolve_ns(target), target
    from weave_fdp.engine import docker_api

    c = docker_api.inspect(target, docker_host)
    if c.pid <= 0:
        raise NotFound(f"container {target} ({c.short_id}) is not running", fix="start it first")
    return c.netns_path, c.short_id


def _resolve_ns(target: str) -> str:
    if target.startswith("netns:"):
        name = target[6:]
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
            raise UsageError(f"bad namespace name in {target!r}", fix="e.g. netns:web1")
        path = Path("/run/netns") / name
        if not path.exists():
            raise NotFound(f"network namespace {name} does not exist", fix="create it (ip netns add) or check the name")
        return str(path)
    if target.startswith("pid:"):
        pid = target[4:]
        if not pid.isdigit():
            raise UsageError(f"bad process id in {target!r}", fix="e.g. pid:4242")
        path = Path(f"/proc/{pid}/ns/net")
        if not path.exists():
            raise NotFound(f"process {pid} does not exist", fix="check the PID")
        return str(path)
    raise UsageError(f"bad target {target!r}", fix="use netns:NAME, pid:PID or a container name")
