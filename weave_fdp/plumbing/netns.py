"""Named network namespaces (``ip netns`` style): create, delete, find, run commands in them.

Namespaces are bind mounts under ``/run/netns``, exactly as iproute2 makes them,
so ``ip netns exec NAME ...`` and these helpers see the same set. Creation
refuses a name that exists (``AlreadyExists``); deletion tolerates only "already
gone". Netlink work inside a namespace goes through :func:`netns_ipr`, which never
creates a namespace by accident (pyroute2's default would).

Example::

    with temporary_netns("t1a2b3-x") as ns:
        run_in_netns(ns, ["ip", "link"])
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns

from weave_fdp.errors import AlreadyExists, FdpError, NotFound, PermissionDenied, UsageError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
# iproute2 accepts any file name; we keep to names that are safe in shells, paths and nft.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class NetnsCommandFailed(FdpError, subprocess.CalledProcessError):
    """A command run in a namespace exited non-zero (``check=True``).

    It is both an ``FdpError`` (one line for the CLI) and a
    ``subprocess.CalledProcessError`` (``returncode``, ``stdout``, ``stderr`` for tests).
    """

    def __init__(self, netns: str, cmd: Sequence[str], returncode: int,
                 stdout: Any = None, stderr: Any = None) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(cmd), stdout, stderr)
        tail = ""
        if isinstance(stderr, str) and stderr.strip():
            tail = ": " + stderr.strip().splitlines()[-1]
        # Not FdpError.__init__: its super() call would land in CalledProcessError (MRO).
        self.message = f"`{' '.join(cmd)}` in namespace {netns} exited {returncode}{tail}"
        self.fix = None


class NetnsCommandTimeout(FdpError, subprocess.TimeoutExpired):
    """A command run in a namespace did not finish in time (it was killed)."""

    def __init__(self, netns: str, cmd: Sequence[str], timeout: float,
                 stdout: Any = None, stderr: Any = None) -> None:
        subprocess.TimeoutExpired.__init__(self, list(cmd), timeout, stdout, stderr)
        self.message = f"`{' '.join(cmd)}` in namespace {netns} did not finish within {timeout:g} s"
        self.fix = None


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable namespace name, else raise ``UsageError``."""
    if not _NAME_RE.match(name):
        raise UsageError(f"bad namespace name {name!r}",
                         fix="use letters, digits, '_', '.', '-' (at most 64, not starting with '-' or '.')")
    return name


def netns_path(name: str) -> Path:
    """Path of the namespace's bind mount (``/run/netns/NAME``)."""
    return NETNS_DIR / check_name(name)


def netns_exists(name: str) -> bool:
    """True when a named namespace ``name`` exists."""
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str | None = None, pattern: re.Pattern[str] | None = None) -> list[str]:
    """Names of the named namespaces, sorted; optionally only those starting with
    ``prefix`` and/or fully matching ``pattern``."""
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []
    if prefix is not None:
        names = [n for n in names if n.startswith(prefix)]
    if pattern is not None:
        names = [n for n in names if pattern.fullmatch(n)]
    return names


def create_netns(name: str, *, exist_ok: bool = False, lo_up: bool = True) -> str:
    """Create the named namespace ``name`` (with its loopback up unless not ``lo_up``)
    and return its name.

    Raises ``AlreadyExists`` when it exists, unless ``exist_ok``.
    """
    check_name(name)
    if netns_exists(name):
        if exist_ok:
            return name
        raise AlreadyExists(f"network namespace {name} already exists",
                            fix=f"remove it (`ip netns delete {name}`) or choose another name")
    _require_root(f"create network namespace {name}")
    try:
        _pr_netns.create(name)
    except OSError as exc:
        # pyroute2 creates the mount point with O_EXCL: a racing creator lands here.
        if exc.errno == errno.EEXIST:
            raise AlreadyExists(f"network namespace {name} already exists") from exc
        raise FdpError(f"cannot create network namespace {name}: {exc}") from exc
    if not netns_exists(name):  # the child reports errors only through its exit
        raise FdpError(f"cannot create network namespace {name}", fix="run as root")
    if lo_up:
        with netns_ipr(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    log.debug("created netns %s", name)
    return name


def delete_netns(name: str) -> bool:
    """Delete the named namespace; False when it was already gone.

    Processes still inside keep the namespace (and its links) alive: use
    :func:`kill_netns_pids` first when that matters.
    """
    path = NETNS_DIR / name
    try:
        _pr_netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        if exc.errno == errno.EBUSY and path.exists():
            # A lingering mount (e.g. an `ip netns exec` mount namespace); unlink when free.
            raise FdpError(f"network namespace {name} is busy", fix="stop the processes using it") from exc
        raise FdpError(f"cannot delete network namespace {name}: {exc}") from exc
    log.debug("deleted netns %s", name)
    return True


@contextmanager
def temporary_netns(name: str) -> Iterator[str]:
    """Create ``name``, yield it, and on exit kill what runs in it and delete it."""
    create_netns(name)
    try:
        yield name
    finally:
        kill_netns_pids(name)
        delete_netns(name)


@contextmanager
def netns_ipr(name: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink handle (pyroute2 ``IPRoute``) bound to namespace ``name``
    (None: the namespace of this process). Closed on exit. Never creates the namespace."""
    if name is None:
        ipr = IPRoute()
    else:
        if not netns_exists(name):
            raise NotFound(f"network namespace {name} does not exist", fix="check `ip netns list`")
        try:
            ipr = IPRoute(netns=name, flags=0)
        except FileNotFoundError as exc:
            raise NotFound(f"network namespace {name} does not exist") from exc
    try:
        yield ipr
    finally:
        ipr.close()


def _ns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``name`` (as ``ip netns pids``)."""
    key = _ns_inode(name)
    if key is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread we may not inspect
        if (st.st_dev, st.st_ino) == key:
            pids.append(int(entry))
    return sorted(pids)


def kill_netns_pids(name: str, *, grace: float = 1.0) -> list[int]:
    """Stop every process in namespace ``name``: SIGTERM, then SIGKILL after ``grace`` s.

    Returns the PIDs that were signalled. Processes that exit on their own meanwhile
    are fine ("already gone").
    """
    pids = netns_pids(name)
    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.02)
    # Also pick up anything forked in the meantime.
    rest = sorted(set(p for p in pids if _alive(p)) | set(netns_pids(name)))
    if rest:
        log.info("netns %s: SIGKILL %s", name, rest)
        _signal_all(rest, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_alive(p) for p in rest):
            time.sleep(0.02)
    return pids


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"


def stop_process(p: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM ``p`` if it still runs, SIGKILL after ``grace`` seconds; reaped either way."""
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def netns_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside namespace ``name`` (``ip netns exec``)."""
    return ["ip", "netns", "exec", name, *argv]


def run_in_netns(name: str, argv: Sequence[str], *, check: bool = True, timeout: float | None = 30,
                 capture: bool = True, input: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in namespace ``name`` and wait for it (text mode).

    ``capture`` collects stdout/stderr (else they are inherited). With ``check`` a
    non-zero exit raises ``NetnsCommandFailed``; a timeout kills the command and raises
    ``NetnsCommandTimeout``; a missing namespace raises ``NotFound``.
    """
    if not netns_exists(name):
        raise NotFound(f"network namespace {name} does not exist", fix="is the lab up? (`weave-fdp lab status`)")
    if not argv:
        raise UsageError("no command given to run in namespace " + name)
    kw: dict[str, Any] = {"text": True, "timeout": timeout, "input": input, "env": env}
    if capture:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cp = subprocess.run(netns_argv(name, argv), **kw)
    except subprocess.TimeoutExpired as exc:
        raise NetnsCommandTimeout(name, argv, timeout or 0, exc.stdout, exc.stderr) from None
    cp.args = list(argv)
    if check and cp.returncode != 0:
        raise NetnsCommandFailed(name, argv, cp.returncode, cp.stdout, cp.stderr)
    return cp


def popen_in_netns(name: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` in namespace ``name``; ``kw`` goes to ``subprocess.Popen``.

    ``ip netns exec`` execs the command, so the Popen's pid is the command's pid.
    """
    if not netns_exists(name):
        raise NotFound(f"network namespace {name} does not exist", fix="is the lab up? (`weave-fdp lab status`)")
    return subprocess.Popen(netns_argv(name, argv), **kw)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionDenied(f"must be root to {what}", fix="run with sudo or as root")


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(netns_path: str) -> Iterator[None]:
    """Run the body with this *thread* in the network namespace at ``netns_path``.

    For opening sockets there (a socket keeps the namespace it was made in); the
    thread switches back at once. pyroute2's NetNS forks a helper instead, and a
    forked child of the router shares its asyncio signal wake-up fd: the helper's
    SIGTERM on close would read as a SIGTERM to the router.
    """
    if not Path(netns_path).exists():
        raise NotFound(f"network namespace {netns_path} does not exist",
                       fix="check the target (netns:NAME or pid:PID)")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(netns_path, os.O_RDONLY)
        except OSError as exc:
            raise NotFound(f"cannot open network namespace {netns_path}: {exc.strerror}") from exc
        try:
            _setns(target)
        except OSError as exc:
            raise NotFound(f"{netns_path} is not a network namespace ({exc.strerror})") from exc
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
