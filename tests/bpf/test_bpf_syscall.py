"""The ctypes bpf() layer itself: load, test-run, map create, verifier log on refusal."""

from __future__ import annotations

import pytest

from weave_fdp.datapath import bpf_syscall as bpf


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
