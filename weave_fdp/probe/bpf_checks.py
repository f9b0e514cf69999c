"""Probe the bpf() side of the kernel with raw syscalls: no bcc, no headers, no compiler.

Each check loads or creates the real object and closes it at once. Helpers are probed the way
bpftool's ``feature probe`` does: load ``call helper; exit``; a verifier log saying the function
is invalid/unknown (or not allowed for the program type) means missing, any other complaint
(uninitialised argument registers) means the verifier knows the helper, so it is there.
"""

from __future__ import annotations

import errno

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.probe import model as m
from weave_fdp.probe.model import Check

#: enum bpf_func_id values (include/uapi/linux/bpf.h; stable ABI)
HELPER_IDS: dict[str, int] = {
    "clone_redirect": 13,
    "skb_get_tunnel_key": 20,
    "skb_set_tunnel_key": 21,
    "redirect": 23,
    "xdp_adjust_head": 44,
    "skb_adjust_room": 50,
    "fib_lookup": 69,
    "redirect_peer": 155,
}

#: minimum kernel that has each helper; only named in the fix text, never used to decide
HELPER_SINCE: dict[str, str] = {
    "clone_redirect": "4.2", "skb_get_tunnel_key": "4.3", "skb_set_tunnel_key": "4.3",
    "redirect": "4.4", "xdp_adjust_head": "4.10", "skb_adjust_room": "4.13",
    "fib_lookup": "4.18", "redirect_peer": "5.10",
}

PROG_TYPES: dict[str, int] = {"SCHED_CLS": bpf.PROG_TYPE_SCHED_CLS, "XDP": bpf.PROG_TYPE_XDP}

#: map kind -> (type, key size, value size)
MAPS: dict[str, tuple[int, int, int]] = {
    "hash": (bpf.MAP_TYPE_HASH, 8, 8),
    "lru_hash": (bpf.MAP_TYPE_LRU_HASH, 8, 8),
    "percpu_hash": (bpf.MAP_TYPE_PERCPU_HASH, 8, 8),
    "percpu_array": (bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8),
}

_MISSING_MARKS = ("invalid func", "unknown func", "cannot use helper")
NEEDS_ROOT = "needs root (CAP_BPF or CAP_SYS_ADMIN)"


def _denied(exc: OSError) -> bool:
    return exc.errno in (errno.EPERM, errno.EACCES)


def check_syscall() -> Check:
    """Create (and close) a one-entry array map: the cheapest proof that bpf() works for us."""
    try:
        bpf.close(bpf.map_create(bpf.MAP_TYPE_ARRAY, 4, 4, 1))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return Check(m.BPF_SYSCALL, False, "bpf() not implemented (ENOSYS)",
                         "use a kernel built with CONFIG_BPF_SYSCALL=y")
        if _denied(exc):
            return Check(m.BPF_SYSCALL, None, f"present, but denied ({exc.strerror}): {NEEDS_ROOT}",
                         "run as root")
        return Check(m.BPF_SYSCALL, False, f"BPF_MAP_CREATE failed: {exc.strerror}", "")
    return Check(m.BPF_SYSCALL, True, "BPF_MAP_CREATE works")


def check_prog_type(name: str) -> tuple[Check, int]:
    """Load ``return <pass>`` as program type ``name``; returns the check and its JIT image size."""
    row = f"prog type {name}"
    pass_verdict = 2 if name == "XDP" else 0  # XDP_PASS / TC_ACT_OK
    try:
        fd = bpf.prog_load(PROG_TYPES[name], bpf.return_imm(pass_verdict), name="fdp_probe")
    except OSError as exc:
        if _denied(exc):
            return Check(row, None, NEEDS_ROOT, "run as root"), -1
        log = getattr(exc, "log", "").strip().splitlines()
        return Check(row, False, f"load failed: {exc.strerror}; {log[-1] if log else 'no verifier log'}",
                     f"kernel lacks BPF_PROG_TYPE_{name}"), -1
    try:
        jited = bpf.prog_jited_len(fd)
    except OSError:
        jited = -1
    finally:
        bpf.close(fd)
    return Check(row, True, "tiny program loads"), jited


def check_helper(helper: str) -> Check:
    """Probe one helper in the program type the fast path calls it from."""
    row = m.helper_check(helper)
    prog_type = m.HELPERS[helper]
    try:
        fd = bpf.prog_load(PROG_TYPES[prog_type], bpf.call(HELPER_IDS[helper]) + bpf.exit_(),
                           name="fdp_probe")
    except OSError as exc:
        log = getattr(exc, "log", "")
        if _denied(exc) and not log:
            return Check(row, None, NEEDS_ROOT, "run as root")
        if any(mark in log for mark in _MISSING_MARKS):
            return Check(row, False, f"{prog_type}: verifier does not know bpf_{helper}",
                         f"needs Linux >= {HELPER_SINCE[helper]}")
        # e.g. "R2 !read_ok": the verifier checked the helper's arguments, so it knows the helper
        return Check(row, True, f"{prog_type}: present (verifier checked its arguments)")
    bpf.close(fd)
    return Check(row, True, f"{prog_type}: loads")


def check_map(kind: str) -> Check:
    """Create (and close) a map of ``kind``."""
    row = m.MAP_CHECKS[kind]
    map_type, key_size, value_size = MAPS[kind]
    try:
        bpf.close(bpf.map_create(map_type, key_size, value_size, 16))
    except OSError as exc:
        if _denied(exc):
            return Check(row, None, NEEDS_ROOT, "run as root")
        return Check(row, False, f"BPF_MAP_CREATE: {exc.strerror}", "kernel lacks this map type")
    return Check(row, True, "created")


def check_jit(jited_len: int, path: str = "/proc/sys/net/core/bpf_jit_enable") -> Check:
    """The JIT sysctl, and whether a program we loaded really got a JIT image (-1: none loaded)."""
    try:
        with open(path) as fh:
            value = fh.read().strip()
    except OSError as exc:
        # net.core.bpf_jit_* exist only in the initial network namespace; the program itself
        # still tells whether it was JIT-compiled.
        if jited_len > 0:
            return Check(m.JIT, True, f"probe program JIT-compiled ({jited_len} bytes; "
                                      f"{path} not visible here)")
        if jited_len == 0:
            return Check(m.JIT, False, "the probe program was not JIT-compiled",
                         "kernel built without CONFIG_BPF_JIT, or sysctl net.core.bpf_jit_enable=0")
        return Check(m.JIT, None, f"cannot read {path}: {exc.strerror}", "")
    fix = "sysctl -w net.core.bpf_jit_enable=1"
    if value == "0":
        return Check(m.JIT, False, f"{path} = 0 (interpreter: slow)", fix)
    if jited_len > 0:
        return Check(m.JIT, True, f"enabled ({value}); probe program JIT-compiled ({jited_len} bytes)")
    if jited_len == 0:
        return Check(m.JIT, False, f"{path} = {value} but the probe program was not JIT-compiled", fix)
    return Check(m.JIT, True, f"{path} = {value} (no program loaded to confirm)")


def run_all() -> list[Check]:
    """Every bpf() check, in display order (JIT uses the SCHED_CLS program's image size)."""
    syscall = check_syscall()
    sched_cls, jited = check_prog_type("SCHED_CLS")
    xdp, _ = check_prog_type("XDP")
    checks = [syscall, check_jit(jited), sched_cls, xdp]
    checks += [check_helper(h) for h in m.HELPERS]
    checks += [check_map(kind) for kind in m.MAP_CHECKS]
    return checks
