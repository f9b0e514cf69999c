"""A small client of the Docker Engine API over a Unix socket (Docker, or Podman's
``podman system service``, which serves the same API).

Only what attach/detach/ps need: ``GET /containers/{id}/json`` (inspect), for the
container's full id, name and the PID whose network namespace is the container's.
Sockets tried, in order: ``DOCKER_HOST`` (``unix://PATH`` only), /var/run/docker.sock,
/run/podman/podman.sock. An engine that does not answer is an error naming its socket
(when no other engine knows the container); a container no engine knows is NotFound.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from weave_fdp.errors import FdpError, NotFound, UsageError

DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
TIMEOUT = 5.0   # seconds per request: a hung engine must not hang attach
MAX_BODY = 4 << 20   # bytes of an inspect answer we are willing to read
# Docker's container names and (full or short) ids; anything else never reaches a URL
NAME_RE = re.compile(r"^/?[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class Container:
    id: str          # full id (64 hex digits)
    name: str        # without the leading '/'
    pid: int         # 0 when not running
    socket: str      # the engine socket that answered

    @property
    def short_id(self) -> str:
        """The 12 hex digits Weave's and Docker's `ps` print."""
        return self.id[:12]

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class EngineUnreachable(FdpError):
    """An engine socket exists but does not answer HTTP."""


def engine_sockets(docker_host: str | None = None) -> list[str]:
    """The sockets to ask, most specific first (``docker_host``: a DOCKER_HOST value)."""
    out = []
    host = docker_host if docker_host is not None else os.environ.get("DOCKER_HOST")
    if host:
        if not host.startswith("unix://"):
            raise UsageError(f"DOCKER_HOST={host!r} is not a unix:// socket",
                             fix="weave-fdp talks to the engine through its Unix socket, e.g. "
                                 "DOCKER_HOST=unix:///run/podman/podman.sock")
        out.append(host[len("unix://"):])
    out += [p for p in DEFAULT_SOCKETS if p not in out]
    return out


def get_json(sock_path: str, path: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of ``GET path``; EngineUnreachable when it does not answer."""
    conn = _UnixConnection(sock_path, timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
    except (OSError, http.client.HTTPException) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        raise EngineUnreachable(f"the container engine at {sock_path} does not answer: {why}",
                                fix="start it (dockerd, or: podman system service) or set DOCKER_HOST") from None
    finally:
        conn.close()
    if len(body) > MAX_BODY:
        raise EngineUnreachable(f"the container engine at {sock_path} sent an oversized answer to {path}")
    try:
        return resp.status, json.loads(body) if body else None
    except ValueError:
        raise EngineUnreachable(f"the container engine at {sock_path} sent malformed JSON for {path}",
                                fix="is that socket a Docker Engine API?") from None


def parse_inspect(data: Any, sock_path: str) -> Container:
    """A Container from an inspect answer; EngineUnreachable when the answer lacks the fields."""
    try:
        cid, name, pid = data["Id"], data.get("Name", ""), data["State"]["Pid"]
        if not (isinstance(cid, str) and re.fullmatch(r"[0-9a-f]{12,64}", cid)) or not isinstance(pid, int):
            raise TypeError
    except (KeyError, TypeError):
        raise EngineUnreachable(f"the container engine at {sock_path} sent an inspect answer without "
                                "Id and State.Pid", fix="is that socket a Docker Engine API?") from None
    return Container(id=cid, name=str(name).lstrip("/"), pid=pid, socket=sock_path)


def inspect(ref: str, docker_host: str | None = None, timeout: float = TIMEOUT) -> Container:
    """The container called (or with id) ``ref``, from the first engine that knows it."""
    if not isinstance(ref, str) or not NAME_RE.match(ref):
        raise UsageError(f"{str(ref)[:80]!r} is not a container name or id",
                         fix="use a Docker/Podman container name or id, netns:NAME or pid:PID")
    unreachable: list[EngineUnreachable] = []
    asked = []
    for sock_path in engine_sockets(docker_host):
        if not os.path.exists(sock_path):
            continue
        asked.append(sock_path)
        try:
            status, data = get_json(sock_path, f"/containers/{urllib.parse.quote(ref.lstrip('/'))}/json", timeout)
        except EngineUnreachable as exc:
            unreachable.append(exc)
            continue
        if status == 404:
            continue
        if status != 200:
            msg = data.get("message") if isinstance(data, dict) else None
            unreachable.append(EngineUnreachable(f"the container engine at {sock_path} answered {status} "
                                                 f"for {ref}: {msg or 'no message'}"))
            continue
        return parse_inspect(data, sock_path)
    if unreachable:
        raise unreachable[0]
    where = ", ".join(asked) if asked else "no engine socket found (" + ", ".join(engine_sockets(docker_host)) + ")"
    raise NotFound(f"no container {ref!r} (asked: {where})",
                   fix="check the name (docker ps / podman ps), or use netns:NAME or pid:PID")
