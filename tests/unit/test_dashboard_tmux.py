"""The live view in a real terminal (tmux): a frame appears, keys work, q exits 0.

Runs `weave-fdp top --demo-file` (replay, no router needed) in a tmux server of
its own (-L with a random name), so other tmux sessions are never touched.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.sock = "wfdp-test-" + secrets.token_hex(4)
        self.rc_file = tmp / "rc"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                              timeout=10).stdout

    def start(self, argv: list[str], width: int, height: int) -> None:
        cmd = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(self.rc_file))}; sleep 30"
        subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", "new-session", "-d", "-s", "top",
                        "-x", str(width), "-y", str(height), cmd], check=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if pred(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"screen never matched; last screen:\n{text}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def rc(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc_file.exists() and self.rc_file.read_text().strip():
                return int(self.rc_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"top did not exit; screen:\n{self.screen()}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.sock, "kill-server"], capture_output=True, timeout=10)


def top_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "weave_fdp.cli.main", "top", "--demo-file",
            str(FIXTURES / "report_series.json"), "--interval", "0.3", *extra]


def test_live_view_keys_and_quit_at_80x24(tmux: Tmux) -> None:
    tmux.start(top_argv(), 80, 24)
    screen = tmux.wait_for(lambda s: "Connections (3)" in s and "B/s" in s)
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) <= 24 and "host1" in lines[0] and "sort:rate" in lines[-1]
    assert "fastdp" in screen and "sleeve" in screen and "no_route" in screen
    tmux.keys("s")
    tmux.wait_for(lambda s: "sort:bytes" in s and "by bytes" in s)
    tmux.keys("f", "u", "d", "p", "Enter")
    screen = tmux.wait_for(lambda s: "filter:udp" in s)
    assert "top 1 of 1" in screen and "10.48.0.1:53" in screen
    tmux.keys("p")
    tmux.wait_for(lambda s: "PAUSED" in s)
    tmux.keys("q")
    assert tmux.rc() == 0
    assert "Connections" not in tmux.screen()  # the alternate screen is gone


def test_live_view_on_a_wide_terminal_and_resize(tmux: Tmux) -> None:
    tmux.start(top_argv(), 200, 50)
    screen = tmux.wait_for(lambda s: "Peers and routes (5)" in s and "IPAM" in s and "pkt/s" in s)
    assert "sleeve (fastdp heartbeats lost 12s ago)" in screen
    tmux.tmux("resize-window", "-t", "top", "-x", "60", "-y", "12")
    tmux.wait_for(lambda s: len(s.rstrip("\n").split("\n")) <= 12 and "Connections" in s
                  and max(len(x) for x in s.split("\n")) <= 60)
    tmux.keys("q")
    assert tmux.rc() == 0
