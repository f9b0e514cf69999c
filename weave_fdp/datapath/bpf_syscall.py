"""The bpf() system call through ctypes: programs, maps, pins, object info, BPF_PROG_TEST_RUN.

Debian's bcc 0.26 has no binding for BPF_PROG_TEST_RUN, the probe must check the
kernel without bcc or headers, and the router must not map bcc/LLVM at all (its
programs are compiled by a short-lived child and opened here from their pins), so
all of them use this thin layer. Layouts follow ``union bpf_attr`` in
include/uapi/linux/bpf.h (only the prefix we fill).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16

# enum bpf_attach_type: tcx, the kernel's own tc hooks (6.6+)
ATTACH_TCX_INGRESS = 46
ATTACH_TCX_EGRESS = 47
BPF_F_REPLACE = 1 << 2

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

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


def _bpf(cmd: int, attr: ctypes.Array, what: str = "") -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfSyscallError(ctypes.get_errno(), what or f"bpf(cmd={cmd})")
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


# --- map elements ---------------------------------------------------------------
# Keys and values are ctypes objects or buffers (passed by reference); a per-CPU
# map's value buffer holds round_up(value_size, 8) bytes per possible CPU.

def _elem_attr(map_fd: int, key: object, value: object = None, flags: int = 0) -> ctypes.Array:
    attr = ctypes.create_string_buffer(32)
    struct.pack_into("<IIQQQ", attr, 0, map_fd, 0, _ptr(key), _ptr(value), flags)
    return attr


def _ptr(obj: object) -> int:
    if obj is None:
        return 0
    return ctypes.addressof(obj)  # type: ignore[arg-type]


def _found(cmd: int, attr: ctypes.Array, what: str) -> bool:
    """Run an element command; False when the kernel says there is no such element (ENOENT)."""
    try:
        _bpf(cmd, attr, what)
    except BpfSyscallError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup(map_fd: int, key: object, value: object) -> bool:
    """Fill ``value`` with the element at ``key``; False when there is none (ENOENT)."""
    return _found(BPF_MAP_LOOKUP_ELEM, _elem_attr(map_fd, key, value), "BPF_MAP_LOOKUP_ELEM")


def map_update(map_fd: int, key: object, value: object, flags: int = BPF_ANY) -> None:
    """Create or replace the element at ``key`` (raises BpfSyscallError, e.g. E2BIG when full)."""
    _bpf(BPF_MAP_UPDATE_ELEM, _elem_attr(map_fd, key, value, flags), "BPF_MAP_UPDATE_ELEM")


def map_delete(map_fd: int, key: object) -> bool:
    """Delete the element at ``key``; False when there was none."""
    return _found(BPF_MAP_DELETE_ELEM, _elem_attr(map_fd, key), "BPF_MAP_DELETE_ELEM")


def map_next_key(map_fd: int, key: object | None, next_key: object) -> bool:
    """Fill ``next_key`` with the key after ``key`` (the first key when ``key`` is None);
    False at the end."""
    return _found(BPF_MAP_GET_NEXT_KEY, _elem_attr(map_fd, key, next_key), "BPF_MAP_GET_NEXT_KEY")


# --- pins and ids ---------------------------------------------------------------

def obj_pin(fd: int, path: str) -> None:
    """Pin a program or map at ``path`` on a bpffs (EEXIST when something is there)."""
    name = ctypes.create_string_buffer(str(path).encode())
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QII", attr, 0, _addr(name), fd, 0)
    _bpf(BPF_OBJ_PIN, attr, f"BPF_OBJ_PIN {path}")


def obj_get(path: str) -> int:
    """fd of the program or map pinned at ``path`` (ENOENT when absent)."""
    name = ctypes.create_string_buffer(str(path).encode())
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QII", attr, 0, _addr(name), 0, 0)
    return _bpf(BPF_OBJ_GET, attr, f"BPF_OBJ_GET {path}")


def prog_get_fd_by_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, f"BPF_PROG_GET_FD_BY_ID {prog_id}")


def map_get_fd_by_id(map_id: int) -> int:
    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, map_id, 0, 0)
    return _bpf(BPF_MAP_GET_FD_BY_ID, attr, f"BPF_MAP_GET_FD_BY_ID {map_id}")


# --- attach points (BPF_PROG_ATTACH/DETACH/QUERY on a device: tcx) ----------------

def prog_attach(target: int, prog_fd: int, attach_type: int, *, flags: int = 0, replace_fd: int = 0) -> None:
    """Attach ``prog_fd`` at ``target`` (an ifindex of the calling thread's namespace for tcx).

    Layout: target u32 @0, attach_bpf_fd @4, attach_type @8, attach_flags @12,
    replace_bpf_fd @16, relative_fd @20, expected_revision u64 @24.
    """
    attr = ctypes.create_string_buffer(32)
    struct.pack_into("<IIIII", attr, 0, target, prog_fd, attach_type, flags, replace_fd)
    _bpf(BPF_PROG_ATTACH, attr, f"BPF_PROG_ATTACH type {attach_type} at {target}")


def prog_detach(target: int, prog_fd: int, attach_type: int) -> None:
    """Detach ``prog_fd`` from ``target`` (same layout as :func:`prog_attach`)."""
    attr = ctypes.create_string_buffer(32)
    struct.pack_into("<III", attr, 0, target, prog_fd, attach_type)
    _bpf(BPF_PROG_DETACH, attr, f"BPF_PROG_DETACH type {attach_type} at {target}")


def prog_query(target: int, attach_type: int, *, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached at ``target``, in the order they run.

    Layout: target u32 @0, attach_type @4, query_flags @8, attach_flags @12,
    prog_ids (u64 pointer) @16, prog_cnt u32 @24, ... revision u64 @56.
    """
    ids = (ctypes.c_uint32 * max_progs)()
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("<II", attr, 0, target, attach_type)
    struct.pack_into("<QI", attr, 16, ctypes.addressof(ids), max_progs)
    _bpf(BPF_PROG_QUERY, attr, f"BPF_PROG_QUERY type {attach_type} at {target}")
    (count,) = struct.unpack_from("<I", attr, 24)
    return list(ids[:min(count, max_progs)])


# --- object info ----------------------------------------------------------------

def _obj_info(fd: int, size: int) -> ctypes.Array:
    info = ctypes.create_string_buffer(size)
    _fill_info(fd, info)
    return info


def _fill_info(fd: int, info: ctypes.Array) -> None:
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, fd, len(info), _addr(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"BPF_OBJ_GET_INFO_BY_FD fd {fd}")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True)
class ProgInfo:
    """The parts of ``struct bpf_prog_info`` we use."""

    type: int
    id: int
    tag: str            # 16 hex digits, as ``tc``/``bpftool`` print it
    jited_len: int
    name: str           # the kernel's copy: at most 15 characters
    map_ids: tuple[int, ...]


@dataclass(frozen=True)
class MapInfo:
    """The parts of ``struct bpf_map_info`` we use."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str           # at most 15 characters


def prog_info(prog_fd: int, *, max_maps: int = 64) -> ProgInfo:
    """``struct bpf_prog_info`` of a loaded program: type, id, tag, name, map ids.

    Layout: type u32 @0, id @4, tag[8] @8, jited_prog_len @16, ..., nr_map_ids @52,
    map_ids (u64 pointer) @56, name[16] @64.
    """
    ids = (ctypes.c_uint32 * max_maps)()
    info = ctypes.create_string_buffer(80)
    struct.pack_into("<IQ", info, 52, max_maps, ctypes.addressof(ids))
    _fill_info(prog_fd, info)
    ptype, pid = struct.unpack_from("<II", info, 0)
    (jited,) = struct.unpack_from("<I", info, 16)
    (nr,) = struct.unpack_from("<I", info, 52)
    return ProgInfo(type=ptype, id=pid, tag=info.raw[8:16].hex(), jited_len=jited,
                    name=_cstr(info.raw[64:80]), map_ids=tuple(ids[:min(nr, max_maps)]))


def prog_verified_insns(prog_fd: int) -> int:
    """Instructions the verifier processed to accept the program (``bpf_prog_info.verified_insns``
    @216, kernel 5.16+; 0 on older kernels): its share of the verifier's 1,000,000 budget."""
    info = ctypes.create_string_buffer(224)
    _fill_info(prog_fd, info)
    return int(struct.unpack_from("<I", info, 216)[0])


def map_info(map_fd: int) -> MapInfo:
    """``struct bpf_map_info``: type u32 @0, id @4, key_size @8, value_size @12,
    max_entries @16, map_flags @20, name[16] @24."""
    info = _obj_info(map_fd, 40)
    mtype, mid, ksize, vsize, maxe, flags = struct.unpack_from("<IIIIII", info, 0)
    return MapInfo(type=mtype, id=mid, key_size=ksize, value_size=vsize, max_entries=maxe,
                   flags=flags, name=_cstr(info.raw[24:40]))


def prog_jited_len(prog_fd: int) -> int:
    """Length of the JIT-compiled image of a loaded program (0: it runs in the interpreter).

    Reads ``struct bpf_prog_info`` (type, id, tag[8], jited_prog_len, ...) with
    BPF_OBJ_GET_INFO_BY_FD; only its first 24 bytes are asked for.
    """
    info = _obj_info(prog_fd, 24)
    (jited_len,) = struct.unpack_from("<I", info, 16)
    return int(jited_len)
