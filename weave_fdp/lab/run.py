"""Running things in a lab: commands in hosts and containers, routers, more containers."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weave_fdp.errors import FdpError, NotFound
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import topology as topo
from weave_fdp.lab.build import LabBuild, weave_command
from weave_fdp.plumbing.netns import create_netns, netns_exists, popen_in_netns, run_in_netns


class LabRun(LabBuild):
    """Commands, routers and containers in one lab (a part of ``Lab``)."""

    def exec(self, i: int, argv: Sequence[str], check: bool = True, timeout: float | None = 30,
             **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in host ``i``'s namespace; text output captured (``capture=False`` inherits).

        ``check`` raises ``NetnsCommandFailed`` (a ``CalledProcessError``) on non-zero exit.
        """
        return run_in_netns(self.host_ns(i), argv, check=check, timeout=timeout, **kw)

    def popen(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in host ``i``'s namespace (``kw`` to Popen); stopped by :meth:`down`."""
        p = popen_in_netns(self.host_ns(i), argv, **kw)
        self._procs.append(p)
        return p

    def exec_container(self, i: int, j: int, argv: Sequence[str], check: bool = True,
                       timeout: float | None = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in container ``j`` of host ``i`` (as :meth:`exec`)."""
        return run_in_netns(self.container_ns(i, j), argv, check=check, timeout=timeout, **kw)

    def popen_container(self, i: int, j: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in container ``j`` of host ``i``; stopped by :meth:`down`."""
        p = popen_in_netns(self.container_ns(i, j), argv, **kw)
        self._procs.append(p)
        return p

    def add_container(self, i: int) -> str:
        """Create the next container namespace on host ``i`` (lo up, nothing else); its name."""
        j = self.containers(i) + 1
        topo.check_containers(j)
        if not netns_exists(self.host_ns(i)):
            raise NotFound(f"host namespace {self.host_ns(i)} does not exist", fix="run lab.up() first")
        self.state.containers[i] = j
        try:
            ns = create_netns(self.container_ns(i, j))
        except BaseException:
            self.state.containers[i] = j - 1
            raise
        self._save()
        return ns

    def _log_path(self, name: str) -> Path:
        d = lab_state.state_root() / self.prefix
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{name}.log"

    def _run_logged(self, ns: str, argv: Sequence[str], log_name: str, timeout: float) -> None:
        """Run ``argv`` in ``ns`` with output to a log file (a daemon inheriting a pipe
        would otherwise keep us waiting) and raise naming the log when it fails."""
        path = self._log_path(log_name)
        with open(path, "ab") as out:
            p = popen_in_netns(ns, argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise FdpError(f"`{' '.join(argv[3:])}` in {ns} did not finish within {timeout:g} s",
                               fix=f"see {path}") from None
        if rc != 0:
            raise FdpError(f"`{' '.join(argv[3:])}` in {ns} exited {rc}", fix=f"see {path}")

    def launch_routers(self, extra_args: Sequence[str] = (), *, timeout: float = 30) -> None:
        """Run ``weave-fdp launch --nickname h<i> <neighbours' underlay IPs>`` in every host.

        ``launch`` is expected to return once its router runs in the background (as
        ``weave launch`` does). Output goes to ``/run/weave-fdp/lab/<prefix>/h<i>-launch.log``.
        From now on :meth:`down` resets the routers first.
        """
        self.state.routers = self.routers = True
        self._save()
        for i in range(1, self.hosts + 1):
            argv = [*weave_command(), "launch", "--nickname", f"h{i}",
                    *[self.host_ip(n) for n in self.neighbours(i)], *extra_args]
            self._run_logged(self.host_ns(i), argv, f"h{i}-launch", timeout)

    def attach_containers(self, *, timeout: float = 30) -> None:
        """Run ``weave-fdp attach 10.32.<i>.<j>/12 netns:<container ns>`` in each host i."""
        for i in range(1, self.hosts + 1):
            for j in range(1, self.containers(i) + 1):
                argv = [*weave_command(), "attach", self.container_cidr(i, j), f"netns:{self.container_ns(i, j)}"]
                self._run_logged(self.host_ns(i), argv, f"h{i}-attach", timeout)
