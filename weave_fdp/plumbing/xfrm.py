"""Encrypted fastdp: xfrm states and policies that put UDP 6784 between two peers in ESP.

pyroute2 (0.7-0.9) has no xfrm API, so this drives iproute2's ``ip xfrm`` (as the
probe does). Everything works in the current network namespace.

For a connection (see ``datapath/esp.py`` for the keys), on this host::

    state   src L dst R proto esp spi OUT reqid REQID mode transport aead rfc4106(gcm(aes)) KEY 128
    state   src R dst L proto esp spi IN  reqid REQID mode transport aead rfc4106(gcm(aes)) KEY 128
    policy  dst R/32 proto udp dport 6784 dir out priority PRIORITY  tmpl proto esp reqid REQID mode transport
    policy  src R/32 proto udp dport 6784 dir in  priority PRIORITY  tmpl proto esp reqid REQID mode transport

Why these shapes:

- *out*: every UDP 6784 packet to R (the kernel VXLAN device's and the heartbeats)
  must leave in ESP. The selector names no source: a packet from another local
  address finds no state and is dropped, never sent in the clear (fail closed).
- *in* (level required, the default): the kernel refuses every UDP 6784 packet
  from R that did not arrive inside ESP, in udp_rcv before the VXLAN device ever
  sees it. So fastdp's receive programs may accept that neighbour's frames on the
  VXLAN device although its connection is sealed (fdp_neigh XFRM), and the
  underlay program (which runs before xfrm) leaves them to the kernel. A policy is
  simpler and sturdier than inspecting the secpath in BPF (which tc programs cannot
  read) or marking packets.
- No marks: the selectors already name our port and that one peer, and a marked
  policy would let an unmarked UDP 6784 packet leave unencrypted (the VXLAN device
  would have to copy a mark from every frame). Ours are told apart from anyone
  else's by ``REQID`` (states) and ``PRIORITY`` with ``dport 6784`` (policies),
  which is what :func:`flush` removes and nothing more.
- The direct path (bpf_redirect_neigh from tc) hands packets to the neighbour
  table, past the xfrm lookup, so the datapath never uses it for these peers.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol

from weave_fdp.errors import DatapathError

log = logging.getLogger(__name__)


class Sa(Protocol):
    """One direction of a connection (``datapath.esp.EspSa``)."""

    src: str
    dst: str
    spi: int
    key: bytes


class SaPair(Protocol):
    """Both directions (``datapath.esp.EspPair``)."""

    out: Sa
    inb: Sa
    local_ip: str
    remote_ip: str


@dataclass(frozen=True)
class Spec:
    """What the caller decides (``datapath.esp``): the AEAD, its ICV and the UDP port."""

    aead: str
    icv_bits: int
    port: int


@dataclass(frozen=True)
class _TestSa:
    src: str
    dst: str
    spi: int
    key: bytes


#: reqid of every state and policy template of ours ("fd" "p" in hex-ish: 0x57fd)
REQID = 0x57FD
#: priority of our policies (marks them as ours together with dport 6784)
PRIORITY = 0x57FD
TIMEOUT = 10.0   # s for one ip command


def _ip() -> str:
    ip = shutil.which("ip")
    if ip is None:
        raise DatapathError("iproute2's ip not found", fix="apt-get install iproute2")
    return ip


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([_ip(), "xfrm", *args], capture_output=True, text=True, timeout=TIMEOUT)
    if check and res.returncode != 0:
        # never echo the command line: it holds a key
        why = (res.stderr.strip().splitlines() or ["failed"])[-1].removeprefix("Error: ")
        raise DatapathError(f"ip xfrm {args[0]} {args[1]}: {why}",
                            fix="check that the kernel has ESP (weave-fdp probe: ESP/XFRM crypto)")
    return res


def _state_args(sa: Sa, spec: Spec) -> list[str]:
    return ["src", sa.src, "dst", sa.dst, "proto", "esp", "spi", f"0x{sa.spi:08x}", "reqid", str(REQID),
            "mode", "transport", "aead", spec.aead, "0x" + sa.key.hex(), str(spec.icv_bits)]


def _policy_args(remote_ip: str, direction: str, port: int) -> list[str]:
    peer = ["dst", f"{remote_ip}/32"] if direction == "out" else ["src", f"{remote_ip}/32"]
    return [*peer, "proto", "udp", "dport", str(port), "dir", direction]


def _tmpl() -> list[str]:
    return ["priority", str(PRIORITY), "tmpl", "proto", "esp", "reqid", str(REQID), "mode", "transport"]


def _delete_states(src: str, dst: str) -> None:
    _run("state", "deleteall", "src", src, "dst", dst, "proto", "esp", "reqid", str(REQID), check=False)


def install(pair: SaPair, spec: Spec) -> None:
    """Put the connection's UDP 6784 in ESP with ``pair``'s keys (replacing older keys: rekey).

    The policies are written first: between the old states going and the new ones
    coming, packets are dropped rather than sent in the clear.
    """
    for direction in ("out", "in"):
        _run("policy", "update", *_policy_args(pair.remote_ip, direction, spec.port), *_tmpl())
    for sa in (pair.out, pair.inb):
        _delete_states(sa.src, sa.dst)
        _run("state", "add", *_state_args(sa, spec))
    log.info("esp: %s <-> %s keyed (spi out 0x%08x, in 0x%08x)", pair.local_ip, pair.remote_ip,
             pair.out.spi, pair.inb.spi)


def remove(local_ip: str, remote_ip: str, port: int) -> None:
    """Remove one connection's states and policies (tolerates "already gone")."""
    for direction in ("out", "in"):
        _run("policy", "delete", *_policy_args(remote_ip, direction, port), check=False)
    _delete_states(local_ip, remote_ip)
    _delete_states(remote_ip, local_ip)


def ours(port: int) -> dict[str, list[str]]:
    """Our states and policies in this namespace, one summary line each (no keys):
    ``{"states": ["192.0.2.1 -> 192.0.2.2 spi 0x..."], "policies": ["dst 192.0.2.2/32 dir out"]}``."""
    out: dict[str, list[str]] = {"states": [], "policies": []}
    res = _run("state", "list", "reqid", str(REQID), check=False)
    cur = None
    for line in res.stdout.splitlines():
        m = re.match(r"^src (\S+) dst (\S+)", line)
        if m:
            cur = f"{m.group(1)} -> {m.group(2)}"
            continue
        m = re.search(r"proto esp spi (0x[0-9a-f]+)", line)
        if m and cur:
            out["states"].append(f"{cur} spi {m.group(1)}")
            cur = None
    res = _run("policy", "list", "priority", str(PRIORITY), check=False)
    head = None
    policy_head = re.compile(r"^src (\S+) dst (\S+)\s*proto udp\s.*dport " + str(port) + r"\b")
    for line in res.stdout.splitlines():
        m = policy_head.match(line)
        if m:
            head = f"{m.group(1)} -> {m.group(2)}"
            continue
        m = re.search(r"dir (in|out|fwd) priority (\d+)", line)
        if m and head and int(m.group(2)) == PRIORITY:
            out["policies"].append(f"{head} dir {m.group(1)}")
            head = None
    return out


def flush(port: int) -> int:
    """Remove every state and policy of ours (``reset``, ``stop``); returns how many were there."""
    found = ours(port)
    n = len(found["states"]) + len(found["policies"])
    _run("state", "deleteall", "proto", "esp", "reqid", str(REQID), check=False)
    for direction in ("out", "in"):
        _run("policy", "deleteall", "dir", direction, "priority", str(PRIORITY), check=False)
    left = ours(port)
    if left["states"] or left["policies"]:
        raise DatapathError(f"xfrm entries of ours survived a flush: {left}",
                            fix="remove them with ip xfrm state/policy delete")
    return n


def supported(spec: Spec) -> str | None:
    """None when this kernel can do encrypted fastdp, else why not (one line).

    Adds a throw-away ESP transport state of ours (documentation addresses, a
    fixed SPI) and deletes it again: the ``esp4`` module and the AEAD must load.
    """
    if shutil.which("ip") is None:
        return "iproute2's ip not found"
    test = _TestSa("192.0.2.254", "192.0.2.253", 0x57FD0001, bytes(20))
    try:
        res = _run("state", "add", *_state_args(test, spec), check=False)
        _delete_states(test.src, test.dst)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip xfrm: {exc}"
    if res.returncode == 0:
        return None
    return "kernel lacks ESP (" + (res.stderr.strip().splitlines() or ["ip xfrm state add failed"])[-1] \
        .removeprefix("Error: ") + ")"
