"""A multi-host lab on one machine, made of network namespaces.

Layout (names are part of the contract, see docs/ARCHITECTURE.md):

* ``<prefix>-ul``: the underlay namespace with bridge ``ul0``; port ``h<i>`` per host;
  nftables (``bridge`` family) there enforces the topology, cuts and UDP blocks.
* ``<prefix>-h<i>``: host i (from 1), ``eth0`` = 192.0.2.<i>/24, MTU 1500, ``lo`` up.
* ``<prefix>-h<i>-c<j>``: container j of host i, only ``lo`` up (the router attaches it).

Nothing is created in the initial namespace and nothing is routed to the uplink.
The lab's state is saved to ``/run/weave-fdp/lab/<prefix>.json`` so another process
can find it with :meth:`Lab.load`.

Example::

    with Lab(prefix="t1a2b3", hosts=3, topology="line") as lab:
        lab.up()
        assert lab.reachability()[(1, 3)] is False   # a line: h1 and h3 are not adjacent
        lab.exec(1, ["ping", "-c1", lab.host_ip(2)])
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from weave_fdp import paths
from weave_fdp.errors import AlreadyExists, DependencyMissing, FdpError, NotFound, PermissionDenied, UsageError
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import topology as topo
from weave_fdp.lab import underlay
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import (
    create_netns,
    delete_netns,
    kill_netns_pids,
    list_netns,
    netns_exists,
    netns_ipr,
    popen_in_netns,
    run_in_netns,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""Progress callback: (what is being done, steps done, steps in total)."""

DEFAULT_PREFIX = "wfdp"
UNDERLAY_NET = "192.0.2"
CONTAINER_PREFIXLEN = 12  # containers get 10.32.<host>.<j>/12 (Weave's default range)
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}$", re.IGNORECASE)
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "ping": "iputils-ping",
}


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if usable in namespace names, else raise ``UsageError``."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise UsageError(f"bad lab prefix {prefix!r}",
                         fix="use 1-16 letters, digits or '_' (no '-'), e.g. --prefix lab2")
    return prefix


def netns_pattern(prefix: str) -> re.Pattern[str]:
    """Matches exactly the namespaces of lab ``prefix`` (and no other lab's)."""
    return re.compile(rf"{re.escape(prefix)}-(ul|h\d+(-c\d+)?)")


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


class Lab:
    """Several hosts (network namespaces) joined by an underlay bridge with a topology."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, hosts: int = 3, topology: str = "full",
                 containers: int = 0, *, routers: bool = False, mtu: int = 1500) -> None:
        self.prefix = check_prefix(prefix)
        self.hosts = topo.check_hosts(hosts)
        self.topology = topo.check_topology(topology)
        topo.check_containers(containers)
        if not 576 <= mtu <= 9000:
            raise UsageError(f"underlay MTU {mtu} out of range", fix="use 576..9000")
        self.routers = routers
        self.state = lab_state.LabState(prefix=prefix, hosts=hosts, topology=topology, mtu=mtu,
                                        containers={i: containers for i in range(1, hosts + 1)})
        self._adj = topo.adjacency(topology, hosts)
        self._procs: list[subprocess.Popen[Any]] = []

    # ---------------------------------------------------------------- names
    @property
    def mtu(self) -> int:
        return self.state.mtu

    @property
    def ul_ns(self) -> str:
        """The underlay namespace (bridge ``ul0``)."""
        return f"{self.prefix}-ul"

    def _check_host(self, i: int) -> int:
        if not isinstance(i, int) or not 1 <= i <= self.hosts:
            raise NotFound(f"lab {self.prefix} has no host {i!r}", fix=f"hosts are 1..{self.hosts}")
        return i

    def host_ns(self, i: int) -> str:
        """Namespace of host ``i`` (from 1): ``<prefix>-h<i>``."""
        return f"{self.prefix}-h{self._check_host(i)}"

    def host_ip(self, i: int) -> str:
        """Underlay address of host ``i`` on its ``eth0``."""
        return f"{UNDERLAY_NET}.{self._check_host(i)}"

    def host_cidr(self, i: int) -> str:
        return f"{self.host_ip(i)}/24"

    def neighbours(self, i: int) -> list[int]:
        """Hosts adjacent to ``i`` in the topology (sorted)."""
        return list(self._adj[self._check_host(i)])

    def links(self) -> list[tuple[int, int]]:
        """Undirected underlay links (i < j) of the topology."""
        return sorted(topo.edges(self.topology, self.hosts))

    def containers(self, i: int) -> int:
        """Number of container namespaces on host ``i``."""
        return self.state.containers.get(self._check_host(i), 0)

    def _check_container(self, i: int, j: int) -> None:
        if not isinstance(j, int) or not 1 <= j <= self.containers(i):
            raise NotFound(f"host h{i} of lab {self.prefix} has no container {j!r}",
                           fix=f"containers of h{i} are 1..{self.containers(i)}; add one with add_container")

    def container_ns(self, i: int, j: int) -> str:
        """Namespace of container ``j`` (from 1) on host ``i``: ``<prefix>-h<i>-c<j>``."""
        self._check_container(i, j)
        return f"{self.prefix}-h{i}-c{j}"

    def container_ip(self, i: int, j: int) -> str:
        """Overlay address the lab gives container j of host i (10.32.<i>.<j>)."""
        self._check_container(i, j)
        return f"10.32.{i}.{j}"

    def container_cidr(self, i: int, j: int) -> str:
        return f"{self.container_ip(i, j)}/{CONTAINER_PREFIXLEN}"

    def namespaces(self) -> list[str]:
        """Every namespace this lab should have (underlay, hosts, containers)."""
        names = [self.ul_ns]
        for i in range(1, self.hosts + 1):
            names.append(self.host_ns(i))
            names.extend(self.container_ns(i, j) for j in range(1, self.containers(i) + 1))
        return names

    def resolve(self, target: str | int) -> str:
        """Namespace for a target such as ``h1``, ``1``, ``h1-c2``, ``h1c2`` or ``ul``."""
        t = str(target).strip().lower()
        if t in ("ul", "underlay"):
            return self.ul_ns
        m = re.fullmatch(r"h?(\d+)(?:-?c(\d+))?", t)
        if not m:
            raise UsageError(f"bad lab target {target!r}", fix="use h<i> (or i), h<i>-c<j>, or ul")
        i = int(m.group(1))
        return self.container_ns(i, int(m.group(2))) if m.group(2) else self.host_ns(i)

    # ---------------------------------------------------------------- lifecycle
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

    @classmethod
    def load(cls, prefix: str = DEFAULT_PREFIX) -> Lab:
        """The lab ``prefix`` as saved by the process that built it (``NotFound`` if none)."""
        saved = lab_state.load(check_prefix(prefix))
        if saved is None:
            known = lab_state.known_prefixes()
            raise NotFound(f"no lab with prefix {prefix!r}"
                           + (f" (labs: {', '.join(known)})" if known else ""),
                           fix="start one with `weave-fdp lab up`" if not known else "pass --prefix")
        lab = cls(prefix=saved.prefix, hosts=saved.hosts, topology=saved.topology, mtu=saved.mtu)
        lab.state = saved
        lab.routers = saved.routers
        return lab

    def is_up(self) -> bool:
        """True when every namespace of the lab exists."""
        return all(netns_exists(ns) for ns in self.namespaces())

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.down()

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

    # ---------------------------------------------------------------- commands
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

    # ---------------------------------------------------------------- underlay faults
    def _pair(self, i: int, j: int) -> tuple[int, int]:
        self._check_host(i)
        self._check_host(j)
        if i == j:
            raise UsageError(f"h{i} and h{j} are the same host", fix="name two different hosts")
        return (min(i, j), max(i, j))

    def _nft(self, command: str) -> None:
        run_in_netns(self.ul_ns, ["nft", command], timeout=10)

    def cut(self, i: int, j: int) -> None:
        """Drop all underlay traffic between hosts i and j (both directions)."""
        pair = self._pair(i, j)
        if pair not in self.state.cuts:
            self._nft(underlay.cut_command(*pair))
            self.state.cuts.append(pair)
            self._save()

    def restore(self, i: int, j: int) -> None:
        """Undo :meth:`cut` (no-op when not cut)."""
        pair = self._pair(i, j)
        if pair in self.state.cuts:
            self._nft(underlay.cut_command(*pair, restore=True))
            self.state.cuts.remove(pair)
            self._save()

    def block_udp_port(self, i: int, j: int, port: int) -> None:
        """Drop UDP from or to ``port`` between hosts i and j (both directions)."""
        key = (*self._pair(i, j), self._check_port(port))
        if key not in self.state.udp_blocks:
            self._nft(underlay.udp_block_command(*key))
            self.state.udp_blocks.append(key)
            self._save()

    def unblock_udp_port(self, i: int, j: int, port: int) -> None:
        """Undo :meth:`block_udp_port` (no-op when not blocked)."""
        key = (*self._pair(i, j), self._check_port(port))
        if key in self.state.udp_blocks:
            self._nft(underlay.udp_block_command(*key, unblock=True))
            self.state.udp_blocks.remove(key)
            self._save()

    @staticmethod
    def _check_port(port: int) -> int:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"bad UDP port {port!r}", fix="use 1..65535")
        return port

    # ---------------------------------------------------------------- observation
    def reachability(self, timeout: float = 1.0) -> dict[tuple[int, int], bool]:
        """Ping every host from every other over the underlay, in parallel.

        ``(i, j) -> True`` when host i got an echo reply from host j's underlay address
        within ``timeout`` s (one probe every 0.2 s until then).
        """
        pairs = [(i, j) for i in range(1, self.hosts + 1) for j in range(1, self.hosts + 1) if i != j]
        deadline = max(1, round(timeout))

        def ping(pair: tuple[int, int]) -> bool:
            i, j = pair
            try:
                cp = run_in_netns(self.host_ns(i), ["ping", "-n", "-q", "-c", "1", "-i", "0.2",
                                                    "-w", str(deadline), self.host_ip(j)],
                                  check=False, timeout=deadline + 5)
            except FdpError:
                return False
            return cp.returncode == 0

        with ThreadPoolExecutor(max_workers=min(32, max(1, len(pairs)))) as pool:
            return dict(zip(pairs, pool.map(ping, pairs)))

    def wait_reachability(self, timeout: float = 5.0) -> dict[tuple[int, int], bool]:
        """Measure :meth:`reachability` until it equals :meth:`expected_reachability`
        or ``timeout`` s pass; the last measurement. After :meth:`restore` a host's
        failed ARP entry needs up to a second or two to resolve again."""
        deadline = time.monotonic() + timeout
        while True:
            reach = self.reachability()
            if reach == self.expected_reachability() or time.monotonic() >= deadline:
                return reach

    def expected_reachability(self) -> dict[tuple[int, int], bool]:
        """What :meth:`reachability` should give: the topology minus cut links."""
        exp = topo.expected_reachability(self.topology, self.hosts)
        for a, b in self.state.cuts:
            exp[(a, b)] = exp[(b, a)] = False
        return exp

    def describe(self) -> dict[str, Any]:
        """The lab as plain data (for ``lab status --json``)."""
        hosts = []
        for i in range(1, self.hosts + 1):
            ns = self.host_ns(i)
            hosts.append({
                "host": i,
                "name": f"h{i}",
                "netns": ns,
                "ip": self.host_ip(i),
                "present": netns_exists(ns),
                "neighbours": [f"h{n}" for n in self.neighbours(i)],
                "containers": [{"name": f"h{i}-c{j}", "netns": self.container_ns(i, j),
                                "present": netns_exists(self.container_ns(i, j))}
                               for j in range(1, self.containers(i) + 1)],
            })
        return {
            "prefix": self.prefix,
            "topology": self.topology,
            "mtu": self.mtu,
            "underlay_netns": self.ul_ns,
            "routers": self.state.routers,
            "cuts": [f"h{a}-h{b}" for a, b in self.state.cuts],
            "udp_blocks": [f"h{a}-h{b}:{p}" for a, b, p in self.state.udp_blocks],
            "hosts": hosts,
        }

    # ---------------------------------------------------------------- routers
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
