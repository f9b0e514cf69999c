"""The compile child: the loader's process never maps bcc, errors come back typed, no pin is left."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import pins
from weave_fdp.datapath.fastdp.compile import STAGE_PREFIX, compile_and_open
from weave_fdp.errors import DatapathError

STAGE_ROOT = pins.bpffs_root() / "sys/fs/bpf/weave-fdp"

# Reads a byte past the end of the packet without a bounds check: the verifier refuses it.
UNCHECKED = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(t_counts, u64, 2);
int t_good(struct __sk_buff *skb) {
    u32 k = 1;
    u64 *v = t_counts.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return TC_ACT_OK;
}
int t_unchecked(struct __sk_buff *skb) {
    unsigned char *data = (void *)(long)skb->data;
    return data[20] == 1 ? TC_ACT_SHOT : TC_ACT_OK;
}
"""


def stages() -> set[str]:
    return {e.name for e in STAGE_ROOT.iterdir() if e.name.startswith(STAGE_PREFIX)} if STAGE_ROOT.is_dir() else set()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    p = tmp_path / "t.c"
    p.write_text(UNCHECKED)
    return p


def test_good_program_is_opened_here_and_stage_removed(source: Path) -> None:
    before = stages()
    loaded = compile_and_open(["t_good"], [], STAGE_ROOT, source=source)
    try:
        fd = loaded.prog_fds["t_good"]
        assert bpf_syscall.prog_info(fd).name == "t_good"
        assert bpf_syscall.prog_test_run(fd, bytes(64)).retval == 0
        m = loaded.map_fds["t_counts"]
        val = ctypes.c_uint64()
        assert bpf_syscall.map_lookup(m, ctypes.c_uint32(1), val) and val.value == 1  # the program's map
    finally:
        loaded.close()
    assert stages() == before


def test_verifier_refusal_names_the_program_and_keeps_the_log(source: Path) -> None:
    before = stages()
    with pytest.raises(DatapathError) as info:
        compile_and_open(["t_good", "t_unchecked"], [], STAGE_ROOT, source=source)
    err = info.value
    assert "the kernel refused BPF program t_unchecked" in err.message
    assert "probe" in (err.fix or "")
    assert "invalid access to packet" in err.log  # the verifier's words, kept
    assert "outside of the packet" in err.message  # and its last line in the one-line message
    assert "\n" not in err.message
    assert stages() == before  # t_good was pinned, then removed with the stage


def test_compile_error_is_typed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int t_x(struct __sk_buff *skb) { return nope; }\n")
    with pytest.raises(DatapathError) as info:
        compile_and_open(["t_x"], [], STAGE_ROOT, source=bad)
    assert info.value.message.startswith("cannot compile the fastdp BPF programs")
    assert "undeclared identifier 'nope'" in info.value.message
    assert "nope" in info.value.log


def test_loader_process_never_imports_bcc() -> None:
    """A fresh interpreter loads the real programs (test build) and maps no libbcc."""
    code = (
        "import sys\n"
        "from weave_fdp.datapath.fastdp.loader import FastDatapath\n"
        "d = FastDatapath(test_mode=True).load()\n"
        "tag = d.tag('fdp_from_tunnel')\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('bcc' in sys.modules, 'libbcc' in maps, 'LLVM' in maps, len(tag))\n"
        "d.close()\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert cp.stdout.split() == ["False", "False", "False", "16"]
