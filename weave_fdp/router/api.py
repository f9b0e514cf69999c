"""The router's local API server: newline-delimited JSON over an abstract Unix socket.

Request ``{"op": str, "args": {...}}`` -> reply ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"type": cls name, "message": str, "exit_code": int}}``.

Handlers are registered by name on the running server, so other parts (overlays,
IPAM, DNS) add ops without editing this file::

    ctx.api.register("flows", my_async_handler)

The socket is abstract, so it belongs to the network namespace: the CLI run in a
host's namespace finds that host's router with no flags. Only uid 0 is served
(SO_PEERCRED), since the API can change the host's network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from weave_fdp import paths
from weave_fdp.errors import AlreadyExists, FdpError, PermissionDenied, UsageError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

MAX_REQUEST = 1 << 20  # bytes; a request line longer than this is refused


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The wire form of an error (typed for FdpError, generic for bugs)."""
    if isinstance(exc, FdpError):
        return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc),
                                       "exit_code": int(exc.exit_code)}}
    return {"ok": False, "error": {"type": "FdpError", "exit_code": 1,
                                   "message": f"internal error in router: {type(exc).__name__}: {exc}"}}


class ApiServer:
    """Serves registered ops on the abstract socket ``name`` (default: this netns's)."""

    def __init__(self, name: str | None = None, *, allow_uid: int = 0) -> None:
        self.name = name or paths.api_socket_name()
        self.allow_uid = allow_uid
        self._handlers: dict[str, Handler] = {}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.register("ping", self._ping)
        self.register("ops", self._ops)

    def register(self, op: str, handler: Handler) -> None:
        """Register ``handler`` (async, takes the args dict, returns JSON-able data) for ``op``.

        A later registration of the same op replaces the earlier one (so a part can
        override a placeholder such as ``rmpeer``).
        """
        self._handlers[op] = handler

    def handler(self, op: str) -> Handler | None:
        return self._handlers.get(op)

    async def _ping(self, args: dict[str, Any]) -> str:
        return "pong"

    async def _ops(self, args: dict[str, Any]) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        """Bind the socket; AlreadyExists when another router of this netns holds it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.name)
        except OSError as exc:
            sock.close()
            raise AlreadyExists("a router is already running in this network namespace "
                                f"(API socket {self.name.lstrip(chr(0))!r} is taken: {exc.strerror})",
                                fix="stop it with: weave-fdp stop") from exc
        sock.listen(64)
        sock.setblocking(False)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._clients)
        for task in tasks:
            task.cancel()
        # wait for them: a client task destroyed after its loop closed would fail in writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _peer_uid(self, writer: asyncio.StreamWriter) -> int | None:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            uid = self._peer_uid(writer)
            if uid != self.allow_uid:
                await self._send(writer, error_reply(PermissionDenied(
                    f"the router API serves root only (caller uid {uid})", fix="run as root")))
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, error_reply(UsageError(
                        f"API request longer than {MAX_REQUEST} bytes")))
                    return
                if not line:
                    return
                reply = await self.dispatch(line)
                await self._send(writer, reply)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            try:
                writer.close()
            except RuntimeError:
                pass   # the loop is already closed (a server dropped without stop()): nothing to flush

    async def dispatch(self, line: bytes) -> dict[str, Any]:
        """Decode one request line, run its handler and return the reply dict."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise UsageError('API request must be {"op": str, "args": {...}}')
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise UsageError(f"API args of {req['op']!r} must be an object")
            handler = self.handler(req["op"])
            if handler is None:
                raise UsageError(f"unknown API op {req['op']!r}",
                                 fix="the router may be older than this CLI, or that part is disabled")
            return {"ok": True, "result": await handler(args)}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:   # bytes that are not UTF-8 either
            return error_reply(UsageError(f"API request is not JSON: {exc}"[:300]))
        except FdpError as exc:
            return error_reply(exc)
        except Exception as exc:  # a bug in a handler must not kill the router
            log.exception("API op failed")
            return error_reply(exc)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply, default=str).encode() + b"\n")
        await writer.drain()
