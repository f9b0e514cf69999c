"""bpf/fdp_abi.h and weave_fdp/datapath/fastdp/abi.py agree, measured, not assumed.

A BPF program compiled by bcc against the header writes sizeof and offsetof of
every ABI struct and field into an array; BPF_PROG_TEST_RUN runs it once and the
values are compared with ctypes (the alignchecker idea of Cilium).
"""

from __future__ import annotations

import ctypes

import pytest

from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.source import BPF_DIR

bcc = pytest.importorskip("bcc")


def _layout_items() -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = []
    for cname, cls in abi.STRUCTS.items():
        items.append((cname, None))
        items.extend((cname, f[0]) for f in cls._fields_)
    return items


def test_every_abi_struct_and_field_matches_ctypes() -> None:
    items = _layout_items()
    lines = []
    for i, (cname, field) in enumerate(items):
        expr = f"sizeof(struct {cname})" if field is None else f"offsetof(struct {cname}, {field})"
        lines.append(f"  k = {i}; v = {expr}; out.update(&k, &v);")
    text = ("#include <uapi/linux/bpf.h>\n#include <linux/stddef.h>\n"
            f'#include "{BPF_DIR}/fdp_abi.h"\n'
            f"BPF_ARRAY(out, u64, {len(items)});\n"
            "int layout(struct __sk_buff *skb) {\n  u32 k; u64 v;\n" + "\n".join(lines) + "\n  return 0;\n}\n")
    b = bcc.BPF(text=text.encode())
    fn = b.load_func(b"layout", bcc.BPF.SCHED_CLS)
    res = bpf_syscall.prog_test_run(fn.fd, b"\0" * 64)
    assert res.retval == 0
    table = b[b"out"]
    mismatches = []
    for i, (cname, field) in enumerate(items):
        kernel = table[ctypes.c_int(i)].value
        cls = abi.STRUCTS[cname]
        py = ctypes.sizeof(cls) if field is None else getattr(cls, field).offset
        if kernel != py:
            mismatches.append(f"{cname}.{field or 'sizeof'}: C {kernel} != Python {py}")
    b.cleanup()
    assert not mismatches, "\n".join(mismatches)
    assert len(items) > 40  # every struct and field was measured
