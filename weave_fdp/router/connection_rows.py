"""The rows of ``report["connections"]`` (what `status connections` and `top` show): pure.

One row shape for the three kinds of row: a link (pending or established), a
target the maker dials (connecting, failed or waiting to retry) and an inbound
source whose attempts failed. Every row has the keys of :class:`ConnectionRow`;
each kind adds a few of its own (``extra``). Which overlay carries a link is
:func:`connection_mode`'s rule.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ConnectionRow:
    address: str                    # HOST:PORT of the other end (an inbound failure: its source)
    state: str                      # established | pending | failed | retrying
    info: str                       # encryption of the link, or what went wrong
    outbound: bool = True
    peer: str | None = None
    nickname: str | None = None
    mode: str | None = None         # the overlay carrying it (fastdp, sleeve), None: none
    mode_reason: str | None = None  # why not fastdp (or why nothing carries it)
    mtu: int | None = None
    rtt_ms: float | None = None
    tx_bytes: int = 0
    rx_bytes: int = 0
    retry_at: float | None = None   # wall-clock time of the next attempt
    extra: dict[str, Any] = field(default_factory=dict)   # the kind's own keys

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **d["extra"]}


def link_row(link: Any, address: str, mode: dict[str, Any]) -> dict[str, Any]:
    """A mesh link; ``mode`` is its :func:`connection_mode`."""
    return ConnectionRow(
        address=address, peer=link.peer, nickname=link.features.nickname, outbound=link.outbound,
        state="established" if link.established else "pending",
        info="encrypted" if link.cipher else "unencrypted",
        mode=mode.get("mode"), mode_reason=mode.get("reason"), mtu=mode.get("mtu"), rtt_ms=mode.get("rtt_ms"),
        tx_bytes=link.tx_bytes, rx_bytes=link.rx_bytes,
        extra={"encryption": encryption_word(mode.get("encrypted")), "overlays": list(link.features.overlays),
               "protocol_version": link.protocol_version}).as_dict()


def target_row(target: Any, mono: float, wall: float) -> dict[str, Any]:
    """A target the connection maker dials that has no link (yet)."""
    connecting = target.state == "connecting"
    retry = None if connecting else round(wall + max(0.0, target.retry_at - mono), 1)
    return ConnectionRow(
        address=target.address, peer=target.peer,
        state={"connecting": "pending", "failed": "failed"}.get(target.state, "retrying"),
        info=target.last_error or ("connecting" if connecting else "waiting to retry"),
        retry_at=retry, extra={"attempts": target.attempts, "direct": target.direct}).as_dict()


def failure_row(failure: Any) -> dict[str, Any]:
    """An inbound source whose attempts failed (one row however many attempts)."""
    tries = (f"{failure.attempts} failed attempts since {clock(failure.first)}, last: "
             if failure.attempts > 1 else "")
    return ConnectionRow(address=failure.source, outbound=False, state="failed", info=tries + failure.reason,
                         extra={"at": round(failure.last, 1), "attempts": failure.attempts}).as_dict()


def encryption_word(encrypted: bool | None) -> str | None:
    """The data path's encryption as ``status connections`` shows it (Weave's words):
    "encrypted", "unencrypted" (``--password`` but trusted), None without ``--password``."""
    return None if encrypted is None else ("encrypted" if encrypted else "unencrypted")


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def connection_mode(decision: dict[str, Any] | None,
                    statuses: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Which overlay carries a connection: the switch's ``decision`` (its ``status(peer)``)
    and each overlay's ``connection_status``, in preference order. The rule:

    1. The switch is the authority: it alone steers a peer's traffic (it tells fastdp
       to redirect or to pass frames to the bridge), so once it decided, its mode is the
       answer even if fastdp is healthy again and the switch still waits out its resume
       delay. The chosen overlay adds MTU and RTT; with sleeve the reason is the
       switch's (why not fastdp). If the chosen overlay cannot carry the peer (not
       running here, sleeve datagrams not arriving), there is no mode and the reason
       says both why not fastdp and why not that overlay.
    2. Before a decision, the first overlay, in preference order, that reports a mode.
    3. Otherwise no mode, and the reason names every overlay's reason.
    """
    chosen = (decision or {}).get("mode")
    if chosen:
        st = dict(statuses).get(chosen)
        why_not_fastdp = (decision or {}).get("reason")
        if st is not None and st.get("mode") == chosen:
            return {**st, "reason": why_not_fastdp if chosen != "fastdp" else None}
        why = st.get("reason") if st is not None else "not running on this host"
        reasons = [r for r in (why_not_fastdp, f"{chosen}: {why}") if r]
        return {"mode": None, "reason": "; ".join(reasons), "mtu": (st or {}).get("mtu"), "rtt_ms": None}
    for _name, st in statuses:
        if st.get("mode"):
            return st
    reasons = [f"{name}: {st['reason']}" for name, st in statuses if st.get("reason")]
    return {"mode": None, "reason": "; ".join(reasons) or "no overlay running", "mtu": None, "rtt_ms": None}
