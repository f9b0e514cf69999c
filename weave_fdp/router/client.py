"""Client of the router API (see weave_fdp.router.api for the wire format).

``RouterClient().call("report")`` returns the result or raises the typed FdpError
the router raised (same class name, message and exit code);
RouterNotRunning when nothing listens in this network namespace.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from weave_fdp import errors, paths
from weave_fdp.errors import FdpError, RouterNotRunning


def _error_from_reply(err: Any) -> FdpError:
    if not isinstance(err, dict):
        return FdpError(f"malformed error from router: {err!r}")
    cls = getattr(errors, str(err.get("type", "")), None)
    message = str(err.get("message", "unknown error"))
    if isinstance(cls, type) and issubclass(cls, FdpError):
        exc = cls(message)
    else:
        exc = FdpError(message)
    code = err.get("exit_code")
    if isinstance(code, int) and code != int(exc.exit_code):
        try:
            exc.exit_code = errors.ExitCode(code)
        except ValueError:
            pass
    return exc


class RouterClient:
    """One connection per call; cheap (abstract Unix socket)."""

    def __init__(self, name: str | None = None, timeout: float = 30.0) -> None:
        self.name = name or paths.api_socket_name()
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Run ``op`` with ``args`` in the router; return its result or raise its error."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.name)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise RouterNotRunning("no router is running in this network namespace",
                                       fix="start it with: weave-fdp launch") from exc
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout as exc:
            raise FdpError(f"router did not answer {op!r} within {self.timeout:g} s",
                           fix="check its log (weave-fdp status) or restart it") from exc
        except ConnectionResetError as exc:
            raise RouterNotRunning("the router closed the API connection (stopping?)",
                                   fix="start it with: weave-fdp launch") from exc
        finally:
            sock.close()
        if not buf:
            raise RouterNotRunning("the router closed the API connection without answering",
                                   fix="start it with: weave-fdp launch")
        try:
            reply = json.loads(buf)
        except json.JSONDecodeError as exc:
            raise FdpError(f"malformed reply from router: {exc}") from exc
        if not isinstance(reply, dict):
            raise FdpError("malformed reply from router: not an object")
        if reply.get("ok"):
            return reply.get("result")
        raise _error_from_reply(reply.get("error"))

    def running(self) -> bool:
        """True when a router answers ``ping``."""
        try:
            return self.call("ping") == "pong"
        except RouterNotRunning:
            return False
