"""The probe's pure result model: checks, which of them each datapath needs, and the verdict.

Nothing here touches the kernel; ``checks.py`` fills a ``ProbeReport`` and the CLI and the lab
demo render it. Which checks a datapath requires is data (``REQUIREMENTS``), so the verdict
logic is one loop and a test can state the rule without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weave_fdp.errors import ExitCode

# --- check names (the table rows, in display order) ---------------------------------------
KERNEL = "kernel version"
BPF_SYSCALL = "bpf() syscall"
JIT = "BPF JIT"
BTF = "BTF (vmlinux)"
CAPS = "capabilities"
BCC = "bcc importable"
HEADERS = "kernel headers"
BCC_COMPILE = "bcc compile"
PROG_SCHED_CLS = "prog type SCHED_CLS"
PROG_XDP = "prog type XDP"

#: helper name -> program type name it is probed in (the program type the fast path calls it from)
HELPERS: dict[str, str] = {
    "skb_set_tunnel_key": "SCHED_CLS",
    "skb_get_tunnel_key": "SCHED_CLS",
    "redirect": "SCHED_CLS",
    "redirect_peer": "SCHED_CLS",
    "clone_redirect": "SCHED_CLS",
    "skb_adjust_room": "SCHED_CLS",
    "xdp_adjust_head": "XDP",
    "fib_lookup": "XDP",
}


def helper_check(helper: str) -> str:
    """Row name of the probe of one BPF helper."""
    return f"helper {helper}"


#: map kind -> row name
MAP_CHECKS: dict[str, str] = {
    "hash": "map hash",
    "lru_hash": "map LRU hash",
    "percpu_hash": "map per-CPU hash",
    "percpu_array": "map per-CPU array",
}

CLSACT = "clsact qdisc + tc bpf"
TCX = "tcx (tc bpf without a qdisc)"
VXLAN = "VXLAN collect-md"
XDP_VETH = "native XDP on veth"
BRIDGE = "bridge"
AF_PACKET = "AF_PACKET capture/inject"
UDP = "UDP socket"
ESP = "ESP/XFRM crypto"
BIG_TCP = "IPv4 BIG TCP"


def dev_check(dev: str) -> str:
    """Row name of the ``--dev IFACE`` native XDP check."""
    return f"native XDP on {dev}"


#: What each datapath cannot work without. Everything else is a speed-up or extra (JIT, BTF,
#: XDP and its helpers, redirect_peer, adjust_room, ESP): its failure is shown but does not
#: change the verdict. Order matters: the first failing entry is the verdict's reason, so the
#: root causes (privileges, bpf(), bcc) come before what they would make fail.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "fastdp": (
        CAPS,
        BPF_SYSCALL,
        BCC,
        BCC_COMPILE,
        PROG_SCHED_CLS,
        helper_check("skb_set_tunnel_key"),
        helper_check("skb_get_tunnel_key"),
        helper_check("redirect"),
        helper_check("clone_redirect"),
        *MAP_CHECKS.values(),
        CLSACT,
        VXLAN,
        BRIDGE,
    ),
    "sleeve": (AF_PACKET, UDP, BRIDGE),
}


@dataclass(frozen=True)
class Check:
    """One probe result. ``ok`` is None when the check could not be run (say why in detail)."""

    name: str
    ok: bool | None
    detail: str = ""
    fix: str = ""

    @property
    def result(self) -> str:
        """The word shown in the table's result column."""
        return {True: "yes", False: "no", None: "skipped"}[self.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "result": self.result,
                "detail": self.detail, "fix": self.fix}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(name=str(data["name"]), ok=data.get("ok"), detail=str(data.get("detail", "")),
                   fix=str(data.get("fix", "")))


@dataclass
class ProbeReport:
    """Every check of one probe run and the verdicts derived from them."""

    checks: list[Check] = field(default_factory=list)
    duration_s: float = 0.0
    requirements: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(REQUIREMENTS))

    def get(self, name: str) -> Check | None:
        """The check named ``name``, or None when it was not run."""
        for check in self.checks:
            if check.name == name:
                return check
        return None

    def reason(self, datapath: str) -> str | None:
        """Why ``datapath`` is unavailable (first failing requirement), or None when it is available."""
        for name in self.requirements[datapath]:
            check = self.get(name)
            if check is None:
                return f"{name} not checked"
            if check.ok is None:
                return f"{name} not checked ({check.detail})" if check.detail else f"{name} not checked"
            if not check.ok:
                return f"{name}: {check.detail}" if check.detail else f"{name} failed"
        return None

    @property
    def fastdp_reason(self) -> str | None:
        return self.reason("fastdp")

    @property
    def sleeve_reason(self) -> str | None:
        return self.reason("sleeve")

    @property
    def fastdp_available(self) -> bool:
        return self.fastdp_reason is None

    @property
    def sleeve_available(self) -> bool:
        return self.sleeve_reason is None

    def required_for(self, name: str) -> list[str]:
        """The datapaths that need check ``name`` (empty: optional)."""
        return [dp for dp, names in self.requirements.items() if name in names]

    def verdict_lines(self) -> list[str]:
        """``fastdp: available`` / ``fastdp: unavailable: <reason>`` and the same for sleeve."""
        lines = []
        for datapath in self.requirements:
            why = self.reason(datapath)
            lines.append(f"{datapath}: available" if why is None else f"{datapath}: unavailable: {why}")
        return lines

    @property
    def exit_code(self) -> ExitCode:
        """0 with fastdp, PROBE_SLEEVE_ONLY with only sleeve, PROBE_NOTHING with neither."""
        if self.fastdp_available:
            return ExitCode.OK
        if self.sleeve_available:
            return ExitCode.PROBE_SLEEVE_ONLY
        return ExitCode.PROBE_NOTHING

    def to_dict(self) -> dict[str, Any]:
        """The JSON model (``weave-fdp probe --json``)."""
        checks = []
        for check in self.checks:
            row = check.to_dict()
            row["required_for"] = self.required_for(check.name)
            checks.append(row)
        return {
            "checks": checks,
            "fastdp": {"available": self.fastdp_available, "reason": self.fastdp_reason},
            "sleeve": {"available": self.sleeve_available, "reason": self.sleeve_reason},
            "verdict": self.verdict_lines(),
            "exit_code": int(self.exit_code),
            "duration_s": round(self.duration_s, 3),
        }
