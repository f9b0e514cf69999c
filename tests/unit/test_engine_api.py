"""The Docker Engine API client against a real HTTP server on a Unix socket (the protocol
Docker and `podman system service` speak), and target resolution's bad input."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from weave_fdp.engine import docker_api
from weave_fdp.errors import NotFound, UsageError
from weave_fdp.router.targets import resolve

FULL_ID = "3f4e5d6c7b8a" + "0" * 52
INSPECT = {"Id": FULL_ID, "Name": "/web1", "State": {"Pid": 4242, "Running": True}}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        if self.path in ("/containers/web1/json", f"/containers/{FULL_ID[:12]}/json"):
            body, code = json.dumps(INSPECT).encode(), 200
        elif self.path == "/containers/garbage/json":
            body, code = b"{not json", 200
        else:
            body, code = json.dumps({"message": f"no such container"}).encode(), 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, _ = super().get_request()
        return conn, ("local", 0)   # BaseHTTPRequestHandler wants a client address pair


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    path = str(tmp_path / "engine.sock")
    srv = _UnixHTTP(path, _Handler)
    srv.paths = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield path, srv.paths  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()


def test_inspect_by_name_and_short_id(engine: tuple[str, list[str]]) -> None:
    path, seen = engine
    c = docker_api.inspect("web1", f"unix://{path}")
    assert (c.id, c.name, c.pid, c.short_id, c.socket) == (FULL_ID, "web1", 4242, FULL_ID[:12], path)
    assert c.netns_path == "/proc/4242/ns/net"
    assert docker_api.inspect(FULL_ID[:12], f"unix://{path}").name == "web1"
    assert seen[0] == "/containers/web1/json"


def test_unknown_container_is_not_found(engine: tuple[str, list[str]]) -> None:
    path, _ = engine
    with pytest.raises(NotFound, match="no container 'nosuch'") as ei:
        docker_api.inspect("nosuch", f"unix://{path}")
    assert path in str(ei.value)


def test_malformed_answer_and_dead_socket_name_the_socket(engine: tuple[str, list[str]], tmp_path: Path) -> None:
    path, _ = engine
    with pytest.raises(docker_api.EngineUnreachable, match="malformed JSON"):
        docker_api.inspect("garbage", f"unix://{path}")
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))            # bound, never listening: connection refused
    try:
        with pytest.raises(docker_api.EngineUnreachable, match=f"{dead} does not answer") as ei:
            docker_api.inspect("web1", f"unix://{dead}")
        assert "podman system service" in str(ei.value)
    finally:
        s.close()


def test_silent_engine_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()                   # accepts, never answers
    try:
        with pytest.raises(docker_api.EngineUnreachable, match="does not answer"):
            docker_api.inspect("web1", f"unix://{path}", timeout=0.3)
    finally:
        s.close()


@pytest.mark.parametrize("ref", ["", "../etc", "a b", "web1/json?x", "-x", "x" * 300])
def test_bad_container_refs_never_reach_a_url(ref: str) -> None:
    with pytest.raises(UsageError):
        docker_api.inspect(ref, "unix:///nonexistent.sock")


def test_docker_host_must_be_a_unix_socket() -> None:
    with pytest.raises(UsageError, match="unix://"):
        docker_api.engine_sockets("tcp://10.0.0.1:2375")


@pytest.mark.parametrize("target,exc", [
    ("/etc/passwd", UsageError), ("/run/netns/../x", UsageError), ("/run/netns/nosuch-ns-xyz", NotFound),
    ("/proc/999999999/ns/net", NotFound), ("netns:bad/name", UsageError), ("pid:x", UsageError),
    ("netns:nosuch-ns-xyz", NotFound)])
def test_bad_targets(target: str, exc: type) -> None:
    with pytest.raises(exc):
        resolve(target)


def test_namespace_paths_are_targets() -> None:
    me = f"/proc/{os.getpid()}/ns/net"
    assert resolve(me) == (me, me)
