"""A real router API server on a private abstract socket, served from a thread (for unit tests)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from weave_fdp.router.api import ApiServer, Handler


@contextmanager
def serving(handlers: dict[str, Handler]) -> Iterator[tuple[str, ApiServer]]:
    """(socket name, server) with ``handlers`` registered; more may be registered while it runs."""
    name = "\0weave-fdp-test/" + secrets.token_hex(4)
    srv = ApiServer(name, allow_uid=os.getuid())
    for op, fn in handlers.items():
        srv.register(op, fn)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(srv.start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        yield name, srv
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(2)
