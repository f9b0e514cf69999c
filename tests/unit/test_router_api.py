"""Router API: JSON lines over an abstract socket, typed errors both ways."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from weave_fdp.errors import NotFound, RouterNotRunning, UsageError
from weave_fdp.router.api import ApiServer
from weave_fdp.router.client import RouterClient

from tests.unit.api_server import serving


@pytest.fixture
def server() -> Iterator[tuple[str, ApiServer]]:
    async def boom(args: dict) -> None:
        raise NotFound(f"peer {args.get('peer')!r} not found", fix="check weave-fdp status peers")

    async def bug(args: dict) -> None:
        raise RuntimeError("oops")

    async def echo(args: dict) -> dict:
        return args

    with serving({"boom": boom, "bug": bug, "echo": echo}) as s:
        yield s


def test_roundtrip_and_typed_errors(server: tuple[str, ApiServer]) -> None:
    c = RouterClient(server[0], timeout=5)
    assert c.call("ping") == "pong"
    assert c.call("echo", a=1, b=[1, "x"]) == {"a": 1, "b": [1, "x"]}
    with pytest.raises(NotFound, match="peer 'x' not found") as ei:
        c.call("boom", peer="x")
    assert ei.value.exit_code == 7
    with pytest.raises(UsageError, match="unknown API op"):
        c.call("nope")
    with pytest.raises(Exception, match="internal error in router"):
        c.call("bug")
    assert "echo" in c.call("ops")


def test_second_server_same_name_refused(server: tuple[str, ApiServer]) -> None:
    from weave_fdp.errors import AlreadyExists

    with pytest.raises(AlreadyExists, match="already running"):
        asyncio.run(ApiServer(server[0]).start())


def test_no_router() -> None:
    c = RouterClient("\0weave-fdp-test/none-" + secrets.token_hex(4))
    with pytest.raises(RouterNotRunning, match="weave-fdp launch"):
        c.call("report")
    assert not c.running()
