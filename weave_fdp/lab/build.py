"""Building and removing a lab: namespaces, the underlay bridge and its rules, host ports.

``up`` builds everything or nothing (a failure or Ctrl-C removes what it created);
``teardown`` removes every namespace of a prefix, also the leftovers of a crashed
run, after resetting the routers that ran there.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from weave_fdp import paths
from weave_fdp.errors import AlreadyExists, DependencyMissing, FdpError, PermissionDenied
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import underlay
from weave_fdp.lab.names import LabNames, check_prefix, netns_pattern
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import (create_netns, delete_netns, kill_netns_pids, list_netns, netns_exists,
                                      netns_ipr, run_in_netns)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""Progress callback: (what is being done, steps done, steps in total)."""

REQUIRED_TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "ping": "iputils-ping",
}


def lab_namespaces(prefix: str) -> list[str]:
    """Existing namespaces of lab ``prefix``: containers first, underlay last (tear-down order)."""
    names = list_netns(pattern=netns_pattern(check_prefix(prefix)))
    return sorted(names, key=lambda n: (n.endswith("-ul"), "-c" not in n, n))


def check_environment() -> None:
    """Root and the tools the lab runs; typed errors naming the fix."""
    if os.geteuid() != 0:
        raise PermissionDenied("the lab needs root to create network namespaces", fix="run it as root (sudo)")
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise DependencyMissing(f"{tool} not found on PATH",
                                    fix=f"install {package} (`apt-get install {package}` or `make install`)")


def weave_command() -> list[str]:
    """argv prefix that runs this very weave-fdp (same interpreter, same code)."""
    return [sys.executable, "-m", "weave_fdp.cli.main"]


class LabBuild(LabNames):
    """Building and removing one lab (a part of ``Lab``)."""

    routers: bool
    _procs: list[subprocess.Popen[Any]]
    # up() also starts routers and attaches containers: launch_routers and
    # attach_containers are LabRun's (run.py)

    def up(self, progress: ProgressFn | None = None) -> Lab:
        """Build the lab; on any failure (or Ctrl-C) remove what this call created and re-raise.

        Raises ``PermissionDenied`` (not root), ``DependencyMissing`` (ip/nft/ping),
        ``AlreadyExists`` (a namespace of this prefix exists).
        """
        check_environment()
        clash = lab_namespaces(self.prefix)
        if clash:
            raise AlreadyExists(
                f"network namespace {clash[0]} already exists (lab {self.prefix!r} is up or left over)",
                fix=f"remove it with `weave-fdp lab down --prefix {self.prefix}` or choose another --prefix")
        total = 1 + self.hosts + sum(self.state.containers.values()) + 1 + (1 if self.routers else 0)
        done = 0

        def step(what: str) -> None:
            nonlocal done
            if progress:
                progress(what, done, total)
            done += 1

        created: list[str] = []
        owner = os.getpid()
        t0 = time.monotonic()
        try:
            step("underlay bridge")
            self._build_underlay(created)
            with netns_ipr(self.ul_ns) as ul:
                for i in range(1, self.hosts + 1):
                    step(f"host h{i}")
                    self._build_host(i, ul, created)
            for i in range(1, self.hosts + 1):
                for j in range(1, self.containers(i) + 1):
                    step(f"container h{i}-c{j}")
                    created.append(create_netns(self.container_ns(i, j)))
            step("saving state")
            self.state.routers = False  # set by launch_routers once it starts anything
            lab_state.save(self.state)
            if self.routers:
                step("routers")
                self.launch_routers()
                if any(self.state.containers.values()):
                    self.attach_containers()
            if progress:
                progress("ready", total, total)
        except BaseException:
            if os.getpid() != owner:  # a forked helper interrupted by Ctrl-C: not ours to clean up
                os._exit(1)
            log.warning("lab %s: build failed, rolling back %d namespaces", self.prefix, len(created))
            if self.state.routers:
                # routers started: reset them too (every namespace of the prefix is ours,
                # the clash check above saw none)
                teardown(self.prefix, routers=True)
                self._reap()
            else:
                self._rollback(created)
            raise
        log.info("lab %s up: %d hosts (%s) in %.2f s", self.prefix, self.hosts, self.topology,
                 time.monotonic() - t0)
        return self

    def _build_underlay(self, created: list[str]) -> None:
        created.append(create_netns(self.ul_ns))
        # The underlay is IPv4 only; IPv6 link-local chatter would only be noise in captures.
        links.create_bridge(underlay.BRIDGE, netns=self.ul_ns, mtu=self.mtu, up=False)
        links.disable_ipv6_autoconf(underlay.BRIDGE, netns=self.ul_ns)
        links.set_up(underlay.BRIDGE, netns=self.ul_ns)
        # Rules before ports: there is never a moment of full connectivity.
        run_in_netns(self.ul_ns, ["nft", "-f", "-"], input=underlay.ruleset(self.links()), timeout=10)

    def _build_host(self, i: int, ul: Any, created: list[str]) -> None:
        ns = self.host_ns(i)
        created.append(create_netns(ns, lo_up=False))
        with netns_ipr(ns) as h:
            links.set_up("lo", netns=h)
            links.create_veth("eth0", underlay.port_name(i), netns=h, peer_netns=self.ul_ns,
                              mtu=self.mtu, up=False)
            links.disable_ipv6_autoconf("eth0", netns=h)
            links.add_address("eth0", self.host_cidr(i), netns=h)
            links.set_up("eth0", netns=h)
        links.disable_ipv6_autoconf(underlay.port_name(i), netns=ul)
        links.set_master(underlay.port_name(i), underlay.BRIDGE, netns=ul)
        links.set_up(underlay.port_name(i), netns=ul)

    def _rollback(self, created: list[str]) -> None:
        for ns in reversed(created):
            try:
                kill_netns_pids(ns)
                delete_netns(ns)
            except Exception:  # best effort: report, keep removing the rest
                log.exception("rollback: cannot remove namespace %s", ns)
        self._reap()
        lab_state.remove(self.prefix)

    def down(self, progress: ProgressFn | None = None) -> list[str]:
        """Tear the lab down (idempotent): reset routers, stop every process in its
        namespaces, delete them and the state file. Returns the namespaces removed."""
        removed = teardown(self.prefix, routers=self.routers or self.state.routers, progress=progress)
        self._reap()
        return removed

    @staticmethod
    def down_prefix(prefix: str, progress: ProgressFn | None = None) -> list[str]:
        """Remove lab ``prefix`` or the leftovers of a crashed run (found by prefix)."""
        try:
            saved = lab_state.load(check_prefix(prefix))
        except FdpError:  # a state file from another version: remove the lab all the same
            saved = None
        # Without a state file we cannot know whether routers ran: reset to be safe.
        return teardown(prefix, routers=saved.routers if saved else True, progress=progress)

    def _save(self) -> None:
        if netns_exists(self.ul_ns):
            lab_state.save(self.state)

    def _reap(self) -> None:
        for p in self._procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()


def teardown(prefix: str, *, routers: bool = True, progress: ProgressFn | None = None,
             reset_timeout: float = 10) -> list[str]:
    """Remove every namespace of lab ``prefix`` and its state file; idempotent.

    With ``routers``, ``weave-fdp reset`` runs first in each host namespace (failures
    ignored: the router may be gone already). Then every process left in the lab's
    namespaces is stopped, so the namespaces (and their links) really go away.
    """
    names = lab_namespaces(prefix)
    hosts = [n for n in names if re.fullmatch(rf"{re.escape(prefix)}-h\d+", n)]
    total = len(names) + (1 if routers and hosts else 0)
    done = 0
    if routers and hosts:
        if progress:
            progress("resetting routers", done, total)

        def reset(ns: str) -> None:
            try:
                run_in_netns(ns, [*weave_command(), "reset"], check=False, timeout=reset_timeout)
            except FdpError as exc:
                log.info("reset in %s: %s", ns, exc)

        with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
            list(pool.map(reset, hosts))
        done += 1
    removed = []
    for ns in names:
        if progress:
            progress(f"removing {ns}", done, total)
        kill_netns_pids(ns)
        if delete_netns(ns):
            removed.append(ns)
        done += 1
    lab_state.remove(prefix)
    shutil.rmtree(lab_state.state_root() / prefix, ignore_errors=True)
    _remove_host_dirs(prefix)
    if progress:
        progress("removed", total, total)
    return removed


def _remove_host_dirs(prefix: str) -> None:
    """Per-host state, runtime and bpffs pin dirs of the lab's hosts (keyed by namespace
    name, see weave_fdp.paths), and the /etc/netns/NAME dirs (resolv.conf of a container
    attached with weaveDNS, or of a host given lab upstreams): a new lab with the same
    prefix starts fresh."""
    pattern = netns_pattern(prefix)
    for root in (paths.STATE_ROOT, paths.RUNTIME_ROOT, paths.BPFFS_ROOT, Path("/etc/netns")):
        try:
            entries = [e for e in root.iterdir() if pattern.fullmatch(e.name) and e.is_dir()]
        except OSError:
            continue
        for entry in entries:
            shutil.rmtree(entry, ignore_errors=True)
            if entry.exists():
                log.warning("could not remove %s", entry)
