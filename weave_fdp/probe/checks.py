"""The probe runner: every check, done for real, concurrently where it pays.

Two checks run in child processes started first, so they overlap with the in-process work:
the bcc import + compile (``weave_fdp.datapath.fastdp.bcc_check``: LLVM is slow to load and
must stay out of this process) and the device checks (``weave_fdp.probe.netns_child``, inside an
anonymous network namespace that dies with the child). Meanwhile this process reads the system
and probes bpf() with raw syscalls.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Any

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.plumbing import probe_devices
from weave_fdp.probe import bpf_checks, netns_child, system_checks
from weave_fdp.probe import model as m
from weave_fdp.probe.model import Check, ProbeReport

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 15.0  # generous: the machine may be busy; a normal run takes < 1 s
BCC_FIX = ("apt-get install python3-bpfcc and run from a venv made with --system-site-packages "
           "(never `pip install bcc`: an unrelated package); `make install` does this")


def _spawn(module: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _collect(proc: subprocess.Popen[str], what: str, deadline: float) -> tuple[Any, str]:
    """The child's JSON output, or None and why not. The child is always reaped."""
    try:
        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"{what} did not finish within {CHILD_TIMEOUT_S:.0f} s"
    try:
        return json.loads(out), ""
    except ValueError:
        last = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        log.debug("%s stderr:\n%s", what, err)
        return None, f"{what} failed: {last}"


def bcc_checks(status: dict[str, Any] | None, why: str, headers: Check) -> list[Check]:
    """Rows for bcc import and compile from ``bcc_check``'s JSON (None: the child failed)."""
    if status is None:
        return [Check(m.BCC, None, why, ""), Check(m.BCC_COMPILE, None, why, "")]
    if not status.get("importable"):
        return [Check(m.BCC, False, status.get("error", ""), BCC_FIX),
                Check(m.BCC_COMPILE, None, "bcc not importable", BCC_FIX)]
    imported = Check(m.BCC, True, f"version {status.get('version') or 'unknown'}")
    if status.get("compiled"):
        return [imported, Check(m.BCC_COMPILE, True, "tiny tc program compiled and loaded")]
    error = status.get("error", "") or "compile failed"
    if "Operation not permitted" in error or "super-user" in error:
        return [imported, Check(m.BCC_COMPILE, None, f"{error}: needs root", "run as root")]
    fix = headers.fix if not headers.ok else "kernel headers may not match the running kernel (uname -r)"
    return [imported, Check(m.BCC_COMPILE, False, error, fix)]


def dev_check(dev: str) -> Check:
    """``--dev IFACE``: native XDP on an interface of the current namespace, left detached."""
    row = m.dev_check(dev)
    try:
        fd = bpf.prog_load(bpf.PROG_TYPE_XDP, bpf.return_imm(2), name="fdp_probe")
    except OSError as exc:
        return Check(row, None, f"cannot load an XDP program: {exc.strerror}", "run as root")
    try:
        outcome = probe_devices.xdp_native_on(dev, fd)
    finally:
        bpf.close(fd)
    fix = "" if outcome.ok else ("this driver (or its current offload/queue settings) has no native XDP; "
                                 "fastdp still works on it through tc")
    return Check(row, outcome.ok, outcome.detail, fix)


def _order(checks: list[Check]) -> list[Check]:
    """Display order: system, bcc, bpf(), devices, sleeve, extras, --dev last."""
    order = [m.KERNEL, m.BPF_SYSCALL, m.JIT, m.BTF, m.CAPS, m.BCC, m.HEADERS, m.BCC_COMPILE,
             m.PROG_SCHED_CLS, m.PROG_XDP, *[m.helper_check(h) for h in m.HELPERS],
             *m.MAP_CHECKS.values(), m.CLSACT, m.TCX, m.VXLAN, m.XDP_VETH, m.BRIDGE, m.AF_PACKET, m.UDP, m.ESP,
             m.BIG_TCP]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(checks, key=lambda c: rank.get(c.name, len(order)))


def run_probe(dev: str | None = None) -> ProbeReport:
    """Run every check (and the ``dev`` native XDP check when given); never raises for a failed check."""
    started = time.monotonic()
    deadline = started + CHILD_TIMEOUT_S
    bcc_proc = _spawn("weave_fdp.datapath.fastdp.bcc_check")
    dev_proc = _spawn(netns_child.__name__)
    try:
        checks = [system_checks.check_kernel(), system_checks.check_capabilities(),
                  system_checks.check_btf()]
        headers = system_checks.check_headers()
        checks.append(headers)
        checks += bpf_checks.run_all()
        if dev:
            checks.append(dev_check(dev))
    finally:
        bcc_status, bcc_why = _collect(bcc_proc, "bcc check", deadline)
        dev_rows, dev_why = _collect(dev_proc, "device checks", deadline)
    checks += bcc_checks(bcc_status, bcc_why, headers)
    if dev_rows is None:
        checks += [Check(name, None, dev_why, "") for name in netns_child.DEVICE_FIXES]
    else:
        checks += [Check.from_dict(row) for row in dev_rows]
    report = ProbeReport(checks=_order(checks), duration_s=time.monotonic() - started)
    log.info("probe took %.2f s: %s", report.duration_s, "; ".join(report.verdict_lines()))
    return report
