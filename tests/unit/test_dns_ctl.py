"""The control channel to the DNS server process: frames survive any split, snapshots
round-trip, garbage is refused; the process ends when the router dies (kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.router.dns import ctl
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.snapshot import Snapshot

pytestmark = pytest.mark.unit


def a_snapshot() -> Snapshot:
    r = Records("02:00:00:00:00:01")
    r.add("web.weave.local.", "netns:a", "10.32.0.1", now=1)
    r.add("db.svc.weave.local.", "netns:b", "10.32.0.2", now=2)
    return Snapshot.build(r.entries(), r.generation)


@given(st.lists(st.integers(1, 50), max_size=30))
def test_frames_survive_any_split(cuts: list[int]) -> None:
    snap = a_snapshot()
    data = ctl.frame(ctl.snap_msg(snap)) + ctl.frame({"t": "stats", "s": {"udp": 3}})
    reader, got, i = ctl.Reader(), [], 0
    for c in cuts + [len(data)]:
        got += reader.feed(data[i:i + c])
        i += c
    assert [m["t"] for m in got] == ["snap", "stats"]
    back = ctl.snapshot_of(got[0])
    assert back == snap and back.lookup("WEB.weave.local.") == ("10.32.0.1",) and back.has_below("svc.weave.local.")


def test_garbage_frames_are_refused() -> None:
    with pytest.raises(ctl.CtlError):
        ctl.Reader().feed(ctl.LEN.pack(3) + b"\xc1\xc1\xc1")
    with pytest.raises(ctl.CtlError):
        ctl.Reader().feed(ctl.LEN.pack(ctl.MAX_FRAME + 1))
    with pytest.raises(ctl.CtlError):
        ctl.Reader().feed(ctl.frame([1, 2]))                     # type: ignore[arg-type]
    with pytest.raises(ctl.CtlError):
        ctl.snapshot_of({"t": "snap", "g": 1})


ROUTER = r"""
import asyncio, socket, sys
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.responder import Responder
from weave_fdp.router.dns.server import DnsServer
from weave_fdp.router.dns.upstream import Upstream
async def main():
    srv = DnsServer(Responder(Records("02:00:00:00:00:01")), Upstream(path="/nonexistent"), "127.0.0.1", 0,
                    isolate=True)
    await srv.start()
    print(srv.process().pid, flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def test_the_server_process_ends_when_the_router_is_killed() -> None:
    router = subprocess.Popen([sys.executable, "-c", ROUTER], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert router.stdout is not None
        child = int(router.stdout.readline())
        os.kill(router.pid, signal.SIGKILL)
        router.wait(timeout=30)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]:
            assert time.monotonic() < deadline, "the DNS server process outlived its router"
            time.sleep(0.05)
    finally:
        if router.poll() is None:
            router.kill()
            router.wait()
        if child and os.path.exists(f"/proc/{child}"):
            try:
                os.kill(child, signal.SIGKILL)      # only when the test failed
            except ProcessLookupError:
                pass
