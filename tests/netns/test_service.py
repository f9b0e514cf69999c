"""The systemd unit's behaviour without systemd (PID 1 here is not systemd): a small
supervisor that reads the unit (ExecStart, EnvironmentFile, Restart=on-failure, RestartSec,
RestartPreventExitStatus) and runs the router as systemd would, inside a lab host. A crash
is restarted and keeps the peer name and the direct peers; `weave-fdp stop` is a clean exit
and is not restarted; a launch that cannot succeed ("already running") is not retried.
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.netns.test_router_mesh import ENV, Routers, routers, wait_until  # noqa: F401
from weave_fdp.lab.lab import weave_command
from weave_fdp.service import systemd


class UnitSupervisor:
    """Runs a unit's ExecStart in a namespace and restarts it as its [Service] section says."""

    def __init__(self, unit_text: str, env_file: Path, netns: str, extra_args: list[str], env: dict[str, str]) -> None:
        u = configparser.ConfigParser(strict=False, interpolation=None)
        u.optionxform = str  # type: ignore[assignment, method-assign]
        u.read_string(unit_text)
        svc = u["Service"]
        self.restart = svc.get("Restart", "no")
        self.restart_sec = float(svc.get("RestartSec", "0.1"))
        self.prevent = {int(c) for c in svc.get("RestartPreventExitStatus", "").split()}
        words = shlex.split(svc["ExecStart"])
        self.env = {**env, **self._env_file(env_file)}
        argv = [w for word in words[1:] for w in
                (self.env.get(word[1:], "").split() if word.startswith("$") else [word])]
        # the unit's program is the installed weave-fdp; here: this checkout's
        self.argv = ["ip", "netns", "exec", netns, *weave_command(), *argv, *extra_args]
        self.starts = 0
        self.exits: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _env_file(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                k, _, v = line.partition("=")
                out[k.strip()] = v.strip().strip('"')
        return out

    def start(self) -> "UnitSupervisor":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.starts += 1
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rc = self.proc.wait()
            self.exits.append(rc)
            failed = rc != 0 and rc not in self.prevent
            if self._stop.is_set() or self.restart != "on-failure" or not failed:
                return
            time.sleep(self.restart_sec)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._thread.join(timeout=30)


def test_unit_under_a_supervisor(routers: Callable[..., Routers], tmp_path: Path) -> None:
    r = routers(3, "full")
    r.launch(2)
    r.launch(3)
    env_file = tmp_path / "weave-fdp.env"
    env_file.write_text(systemd.ENV_TEMPLATE.format(peers="192.0.2.2"))
    unit = systemd.render_unit("/usr/local/bin/weave-fdp")
    sup = UnitSupervisor(unit, env_file, r.lab.host_ns(1), ["--nickname", "h1", "--state-dir", str(tmp_path / "s1"),
                                                              "--no-fastdp"], ENV)
    try:
        sup.start()
        wait_until(lambda: r.report(1)["targets"] == ["192.0.2.2:6783"], 30, "the router to start with WEAVE_PEERS")
        name = r.report(1)["router"]["name"]
        r.run(1, "connect", "192.0.2.3")
        wait_until(lambda: sum(c["state"] == "established" for c in r.report(1)["connections"]) == 2, 20,
                   "h1 to connect to h2 and h3")
        os.kill(r.report(1)["router"]["pid"], signal.SIGKILL)           # a crash
        wait_until(lambda: sup.starts == 2 and r.report(1)["router"]["name"] == name, 30,
                   "the supervisor to restart the router")
        assert sup.exits == [-signal.SIGKILL]
        assert sorted(r.report(1)["targets"]) == ["192.0.2.2:6783", "192.0.2.3:6783"]   # --resume kept them
        r.run(1, "stop")                                                  # a clean stop: not restarted
        wait_until(lambda: sup.done, 30, "the supervisor to see a clean exit")
        assert sup.exits[-1] == 0 and sup.starts == 2
        assert r.run(1, "status", check=False).returncode == 3
    finally:
        sup.stop()
    # a router already running: exit 4 is not a failure a restart fixes
    r.launch(1)
    sup2 = UnitSupervisor(unit, env_file, r.lab.host_ns(1), ["--state-dir", str(tmp_path / "s1b")], ENV)
    try:
        sup2.start()
        wait_until(lambda: sup2.done, 30, "the supervisor to give up on exit 4")
        assert sup2.exits == [4] and sup2.starts == 1
    finally:
        sup2.stop()
