"""The probe's device checks, run in a child process inside a fresh anonymous network namespace.

``python -m weave_fdp.probe.netns_child`` calls unshare(CLONE_NEWNET) and then makes its
throw-away devices there. The namespace has no name and no mount, so it (and every device,
qdisc and attached program in it) vanishes when this process exits, whatever happens: the probe
cannot leave anything behind even when killed. Prints a JSON list of ``Check`` dicts.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.datapath.fastdp import abi
from weave_fdp.plumbing import probe_devices as dev
from weave_fdp.probe import model as m

CLONE_NEWNET = 0x40000000
NEEDS_ROOT = "needs root (a throw-away network namespace)"

#: checks that need the throw-away namespace (name -> fix shown when they fail)
DEVICE_FIXES: dict[str, str] = {
    m.CLSACT: "kernel needs CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF",
    m.TCX: "optional: Linux >= 6.6; without it fastdp's programs run as clsact filters "
           "(about 75 ns more per packet per hook)",
    m.VXLAN: "kernel needs CONFIG_VXLAN (modprobe vxlan)",
    m.XDP_VETH: "kernel needs veth native XDP (Linux >= 4.19)",
    m.BRIDGE: "kernel needs CONFIG_BRIDGE (modprobe bridge)",
    m.AF_PACKET: "kernel needs CONFIG_PACKET; run as root (CAP_NET_RAW)",
    m.UDP: "kernel needs IPv4 UDP sockets",
    m.ESP: "optional: CONFIG_INET_ESP + CONFIG_CRYPTO_GCM (modprobe esp4 gcm); "
           "without them encrypted peers use sleeve",
    m.BIG_TCP: "optional: Linux >= 6.3; without it the sleeve's super-frames stay within 64 KiB",
}


def _unshare_net() -> str | None:
    """Move this process into a new network namespace; None on success, else why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def _load(prog_type: int, name: str) -> tuple[int | None, str]:
    try:
        return bpf.prog_load(prog_type, bpf.return_imm(0 if prog_type == bpf.PROG_TYPE_SCHED_CLS else 2),
                             name=name), ""
    except OSError as exc:
        return None, f"cannot load a {name} program: {exc.strerror}"


def _with_prog(prog_type: int, run: Callable[[int], dev.Outcome]) -> dev.Outcome:
    fd, why = _load(prog_type, "fdp_probe")
    if fd is None:
        return dev.Outcome(None, why)
    try:
        return run(fd)
    finally:
        os.close(fd)


def _tcx_bpf(prog_fd: int) -> dev.Outcome:
    """Attach ``prog_fd`` at a veth's tcx ingress hook (no qdisc), see it there, detach it."""
    from weave_fdp.datapath import tcx

    try:
        with dev.scratch_veth("fdpp-x") as (index, _b):
            tcx.attach(index, prog_fd, "ingress")
            there = tcx.attached(index, "ingress")
            for a in there:
                tcx.detach(index, a.id, "ingress")
            if not there:
                return dev.Outcome(False, "tcx attach succeeded but the program did not show up")
    except tcx.Unsupported:
        return dev.Outcome(False, "this kernel has no tcx hooks (Linux >= 6.6): clsact filters are used")
    except Exception as exc:
        return dev.Outcome(False, str(exc))
    return dev.Outcome(True, "tcx ingress hook: programs attach without a qdisc")


def device_checks() -> list[m.Check]:
    """Run every device check in a new namespace (or the few that need none, without root)."""
    why_not = _unshare_net()
    results: dict[str, dev.Outcome] = {}
    if why_not is None:
        results[m.CLSACT] = _with_prog(bpf.PROG_TYPE_SCHED_CLS, dev.clsact_bpf)
        results[m.TCX] = _with_prog(bpf.PROG_TYPE_SCHED_CLS, _tcx_bpf)
        results[m.VXLAN] = dev.vxlan_external(abi.VXLAN_PORT)
        results[m.XDP_VETH] = _with_prog(bpf.PROG_TYPE_XDP, dev.xdp_native_veth)
        results[m.BRIDGE] = dev.bridge()
        results[m.AF_PACKET] = dev.af_packet_roundtrip()
        results[m.UDP] = dev.udp_roundtrip()
        results[m.ESP] = dev.xfrm_esp()
        results[m.BIG_TCP] = dev.big_tcp()
    else:
        skipped = dev.Outcome(None, f"{NEEDS_ROOT}: unshare: {why_not}")
        for name in (m.CLSACT, m.TCX, m.VXLAN, m.XDP_VETH, m.BRIDGE, m.ESP, m.BIG_TCP):
            results[name] = skipped
        results[m.AF_PACKET] = dev.af_packet_open()
        results[m.UDP] = dev.udp_roundtrip(send=False)
    checks = []
    for name, outcome in results.items():
        fix = "" if outcome.ok else DEVICE_FIXES[name]
        if (outcome.ok is None and why_not is not None) or "run as root" in outcome.detail:
            fix = "run as root"
        checks.append(m.Check(name, outcome.ok, outcome.detail, fix))
    return checks


def main() -> None:
    json.dump([c.to_dict() for c in device_checks()], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
