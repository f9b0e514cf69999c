"""Is bcc usable here? Import it and compile a tiny tc program, as the fast path's loader will.

The probe runs this as ``python -m weave_fdp.datapath.fastdp.bcc_check`` in a subprocess: importing
bcc (and LLVM with it) stays out of the probe's process, a crashing compiler cannot take the
probe down, and the compile runs while the probe does its other checks. Only this package
imports bcc. Prints one JSON object: ``{"importable", "version", "compiled", "error"}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Includes the same kind of headers the fast path's programs use, so broken or missing kernel
# headers fail here and not at the first `weave-fdp launch`.
PROBE_PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/pkt_cls.h>

int fdp_probe(struct __sk_buff *skb) {
    struct bpf_tunnel_key key = {};
    if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
        return TC_ACT_OK;
    return key.tunnel_id == ETH_P_IP ? TC_ACT_SHOT : TC_ACT_OK;
}
"""


def bcc_status(text: str = PROBE_PROGRAM) -> dict[str, Any]:
    """Import bcc, compile and load ``text`` (a ``fdp_probe`` function) as SCHED_CLS, release it."""
    status: dict[str, Any] = {"importable": False, "version": None, "compiled": False, "error": ""}
    try:
        import bcc
    except Exception as exc:  # ImportError, or a broken libbcc raising OSError
        status["error"] = f"{type(exc).__name__}: {exc}"
        return status
    status["importable"] = True
    status["version"] = getattr(bcc, "__version__", None)
    try:
        prog = bcc.BPF(text=text.encode())
        try:
            prog.load_func(b"fdp_probe", bcc.BPF.SCHED_CLS)
        finally:
            prog.cleanup()
    except Exception as exc:
        status["error"] = f"{type(exc).__name__}: {exc}"
        return status
    status["compiled"] = True
    return status


def main() -> None:
    json.dump(bcc_status(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
