"""The one hierarchy of typed errors and the exit codes the CLI maps them to.

Every message names the thing (interface, peer, address, file) and, where one
exists, the fix. The CLI prints ``error: <message>`` on one line and exits with
the error's code; tracebacks are for bugs only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README "Exit codes")."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    ROUTER_NOT_RUNNING = 3
    ALREADY_EXISTS = 4
    PERMISSION = 5
    KERNEL_FEATURE = 6
    NOT_FOUND = 7
    DEPENDENCY = 8
    # probe verdicts
    PROBE_SLEEVE_ONLY = 10
    PROBE_NOTHING = 11


class FdpError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}" if self.fix else self.message


class UsageError(FdpError):
    """A wrong argument or option value."""

    exit_code = ExitCode.USAGE


class RouterNotRunning(FdpError):
    """No router answers on this host's API socket."""

    exit_code = ExitCode.ROUTER_NOT_RUNNING


class AlreadyExists(FdpError):
    """The thing to create is already there (router, namespace, attachment)."""

    exit_code = ExitCode.ALREADY_EXISTS


class PermissionDenied(FdpError):
    """The caller lacks root / a capability."""

    exit_code = ExitCode.PERMISSION


class KernelFeatureMissing(FdpError):
    """The kernel cannot do what was asked (program type, helper, device kind)."""

    exit_code = ExitCode.KERNEL_FEATURE


class NotFound(FdpError):
    """A named thing (namespace, container, peer, interface) does not exist."""

    exit_code = ExitCode.NOT_FOUND


class DependencyMissing(FdpError):
    """A program or package the command needs is not installed."""

    exit_code = ExitCode.DEPENDENCY


class ProtocolError(FdpError):
    """Malformed or unacceptable data from the network; never fatal to the router."""


class DatapathError(FdpError):
    """A BPF program or map could not be loaded, attached or updated."""

    exit_code = ExitCode.KERNEL_FEATURE


class CapacityFull(DatapathError):
    """A datapath table has no room left (containers, their addresses, map entries);
    the kernel works, so this is no missing feature: exit code 1."""

    exit_code = ExitCode.FAILURE
