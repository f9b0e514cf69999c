"""The bpf() system call through ctypes: load raw programs, create maps, BPF_PROG_TEST_RUN.

Debian's bcc 0.26 has no binding for BPF_PROG_TEST_RUN, and the probe must check the
kernel without bcc or headers, so both use this thin layer. Layouts follow
``union bpf_attr`` in include/uapi/linux/bpf.h (only the prefix we fill).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10

# enum bpf_prog_type
PROG_TYPE_SOCKET_FILTER = 1
PROG_TYPE_SCHED_CLS = 3
PROG_TYPE_XDP = 6

# enum bpf_map_type
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_LRU_PERCPU_HASH = 10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfSyscallError(OSError):
    """A bpf() command failed; ``log`` holds the verifier log when there is one."""

    def __init__(self, errno_: int, what: str, log: str = "") -> None:
        super().__init__(errno_, f"{what}: {os.strerror(errno_)}")
        self.log = log


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfSyscallError(ctypes.get_errno(), f"bpf(cmd={cmd})")
    return int(ret)


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


# --- instructions -------------------------------------------------------------

def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One 8-byte eBPF instruction."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov64_imm(dst: int, imm: int) -> bytes:
    return insn(0xB7, dst=dst, imm=imm)


def mov64_reg(dst: int, src: int) -> bytes:
    return insn(0xBF, dst=dst, src=src)


def call(helper_id: int) -> bytes:
    return insn(0x85, imm=helper_id)


def exit_() -> bytes:
    return insn(0x95)


def return_imm(value: int) -> bytes:
    """``return value;`` as a whole program."""
    return mov64_imm(0, value) + exit_()


# --- commands -----------------------------------------------------------------

def prog_load(prog_type: int, insns: bytes, *, license: str = "GPL", name: str = "",
              log_size: int = 65536) -> int:
    """Load raw instructions; returns the program fd. Raises BpfSyscallError with the verifier log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQII16s", attr, 0, prog_type, len(insns) // 8, _addr(code), _addr(lic),
                     1, log_size, _addr(log), 0, 0, name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfSyscallError as exc:
        raise BpfSyscallError(exc.errno, f"BPF_PROG_LOAD {name or prog_type}",
                              log.value.decode(errors="replace")) from None


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, *,
               flags: int = 0) -> int:
    """Create a map; returns its fd."""
    attr = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    return _bpf(BPF_MAP_CREATE, attr)


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int


def prog_test_run(prog_fd: int, data: bytes, *, repeat: int = 1, data_out_size: int = 0,
                  ctx_in: bytes | None = None) -> TestRunResult:
    """Run a loaded program on ``data`` with BPF_PROG_TEST_RUN; returns verdict and output bytes."""
    out_size = data_out_size or max(len(data) + 512, 256)
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(out_size)
    cin = ctypes.create_string_buffer(ctx_in, len(ctx_in)) if ctx_in else None
    attr = ctypes.create_string_buffer(80)
    struct.pack_into("<IIIIQQIIIIQQ", attr, 0, prog_fd, 0, len(data), out_size, _addr(din), _addr(dout),
                     repeat, 0, len(ctx_in) if ctx_in else 0, 0, _addr(cin), 0)
    _bpf(BPF_PROG_TEST_RUN, attr)
    _, retval, _, size_out = struct.unpack_from("<IIII", attr, 0)
    (duration,) = struct.unpack_from("<I", attr, 36)
    return TestRunResult(retval=retval, data=dout.raw[:size_out], duration_ns=duration)


def close(fd: int) -> None:
    os.close(fd)


# --- object info (added for the probe) -----------------------------------------

BPF_OBJ_GET_INFO_BY_FD = 15


def prog_jited_len(prog_fd: int) -> int:
    """Length of the JIT-compiled image of a loaded program (0: it runs in the interpreter).

    Reads ``struct bpf_prog_info`` (type, id, tag[8], jited_prog_len, ...) with
    BPF_OBJ_GET_INFO_BY_FD; only its first 24 bytes are asked for.
    """
    info = ctypes.create_string_buffer(24)
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), _addr(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    (jited_len,) = struct.unpack_from("<I", info, 16)
    return int(jited_len)
