"""The ctypes bpf() layer itself: load, test-run, maps, pins, ids, object info, verifier log."""

from __future__ import annotations

import ctypes
import secrets
from pathlib import Path

import pytest

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.datapath.fastdp import pins
from weave_fdp.datapath.fastdp.maps import BpfMap, possible_cpus


@pytest.mark.parametrize("prog_type,verdict", [(bpf.PROG_TYPE_SCHED_CLS, 2), (bpf.PROG_TYPE_XDP, 1)])
def test_test_run_returns_program_verdict_and_bytes(prog_type: int, verdict: int) -> None:
    fd = bpf.prog_load(prog_type, bpf.return_imm(verdict), name="verdict")
    try:
        packet = bytes(range(64))
        result = bpf.prog_test_run(fd, packet)
        assert result.retval == verdict
        assert result.data == packet
    finally:
        bpf.close(fd)


def test_unknown_helper_is_refused_with_verifier_log() -> None:
    with pytest.raises(bpf.BpfSyscallError) as info:
        bpf.prog_load(bpf.PROG_TYPE_SCHED_CLS, bpf.call(99999) + bpf.return_imm(0), name="bad")
    assert "invalid func" in info.value.log or "unknown func" in info.value.log


def test_map_create_per_cpu_lru() -> None:
    fd = bpf.map_create(bpf.MAP_TYPE_LRU_PERCPU_HASH, 8, 16, 64)
    assert fd > 0
    bpf.close(fd)


# --- map elements, pins, ids, object info ------------------------------------------


@pytest.fixture
def pin_dir():
    """A fresh directory on the bpffs (no dots: bpffs refuses them), removed afterwards."""
    d = pins.bpffs_root() / "sys/fs/bpf/weave-fdp" / f"_t{secrets.token_hex(4)}"
    d.mkdir(parents=True)
    yield d
    pins.remove_pins(d)


def test_hash_map_update_lookup_iterate_delete() -> None:
    fd = bpf.map_create(bpf.MAP_TYPE_HASH, 4, 8, 16)
    try:
        for k in (1, 2, 3):
            bpf.map_update(fd, ctypes.c_uint32(k), ctypes.c_uint64(k * 100))
        val = ctypes.c_uint64()
        assert bpf.map_lookup(fd, ctypes.c_uint32(2), val) and val.value == 200
        assert not bpf.map_lookup(fd, ctypes.c_uint32(9), val)
        keys, key, nxt = [], None, ctypes.c_uint32()
        while bpf.map_next_key(fd, key, nxt):
            keys.append(nxt.value)
            key = ctypes.c_uint32(nxt.value)
        assert sorted(keys) == [1, 2, 3]
        assert bpf.map_delete(fd, ctypes.c_uint32(2)) and not bpf.map_delete(fd, ctypes.c_uint32(2))
        with pytest.raises(bpf.BpfSyscallError) as info:  # NOEXIST on an existing key
            bpf.map_update(fd, ctypes.c_uint32(1), ctypes.c_uint64(0), bpf.BPF_NOEXIST)
        assert info.value.errno == 17
    finally:
        bpf.close(fd)


class _Odd(ctypes.Structure):
    """12 bytes: per-CPU slots are rounded up to 16."""
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]


def test_bpfmap_per_cpu_layout_rounds_to_8_bytes() -> None:
    fd = bpf.map_create(bpf.MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(_Odd), 4)
    m = BpfMap(fd, "t_percpu", ctypes.c_uint32, _Odd, percpu=True, owned=True)
    try:
        m.set(ctypes.c_uint32(1), _Odd(7, 8, 9))
        vals = m.get_percpu(ctypes.c_uint32(1))
        assert vals is not None and len(vals) == possible_cpus()
        assert all((v.a, v.b, v.c) == (7, 8, 9) for v in vals)
        # the raw buffer the kernel fills: 16-byte slots, one per possible CPU
        raw = ctypes.create_string_buffer(16 * possible_cpus())
        assert bpf.map_lookup(fd, ctypes.c_uint32(1), raw)
        assert all(raw.raw[16 * i:16 * i + 12] == bytes(_Odd(7, 8, 9)) for i in range(possible_cpus()))
        assert not m.delete(ctypes.c_uint32(1))  # arrays refuse deletes: False, no exception
        assert [k.value for k in m.keys()] == [0, 1, 2, 3]
    finally:
        m.close()


def test_pin_get_info_and_ids(pin_dir: Path) -> None:
    prog = bpf.prog_load(bpf.PROG_TYPE_SCHED_CLS, bpf.return_imm(0), name="fdp_t_pin")
    mfd = bpf.map_create(bpf.MAP_TYPE_ARRAY, 4, 8, 2)
    try:
        bpf.obj_pin(prog, str(pin_dir / "prog"))
        bpf.obj_pin(mfd, str(pin_dir / "map"))
        with pytest.raises(bpf.BpfSyscallError):
            bpf.obj_pin(mfd, str(pin_dir / "map"))  # EEXIST
        p2, m2 = bpf.obj_get(str(pin_dir / "prog")), bpf.obj_get(str(pin_dir / "map"))
        try:
            pi, pi2 = bpf.prog_info(prog), bpf.prog_info(p2)
            assert pi.id == pi2.id and pi.name == "fdp_t_pin" and pi.type == bpf.PROG_TYPE_SCHED_CLS
            # the tag as the kernel prints it in fdinfo (what tc and bpftool show)
            fdinfo = Path(f"/proc/self/fdinfo/{prog}").read_text()
            assert f"prog_tag:\t{pi.tag}" in fdinfo
            mi = bpf.map_info(m2)
            assert (mi.type, mi.key_size, mi.value_size, mi.max_entries) == (bpf.MAP_TYPE_ARRAY, 4, 8, 2)
            assert bpf.map_info(mfd).id == mi.id
            by_id = bpf.prog_get_fd_by_id(pi.id)
            assert bpf.prog_info(by_id).tag == pi.tag
            bpf.close(by_id)
            mby = bpf.map_get_fd_by_id(mi.id)
            bpf.map_update(mby, ctypes.c_uint32(1), ctypes.c_uint64(5))
            got = ctypes.c_uint64()
            assert bpf.map_lookup(m2, ctypes.c_uint32(1), got) and got.value == 5  # same map
            bpf.close(mby)
        finally:
            bpf.close(p2)
            bpf.close(m2)
        with pytest.raises(bpf.BpfSyscallError):
            bpf.obj_get(str(pin_dir / "absent"))
    finally:
        bpf.close(prog)
        bpf.close(mfd)
