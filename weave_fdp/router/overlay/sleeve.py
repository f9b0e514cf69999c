"""The sleeve as a router overlay, and the home of the overlay switch.

The router loads this module by name (``OVERLAY_FACTORIES``) and calls
``make_overlay(config)``. The sleeve runs on every connection whose peer
advertises it (the fallback is always warm); the switch decides per connection
whether fastdp or the sleeve carries traffic, steering the fastdp overlay through
:class:`~weave_fdp.router.overlay.switch.FastdpControl` when one is offered.

Keys with ``--password``: the router does not hand out its session keys, so both
ends exchange 16-byte random nonces over the (sealed) TCP control connection as
overlay control messages, and the sleeve secret is
``SHA-256(label ‖ password ‖ nonce of the lower name ‖ nonce of the higher name)``.
A new connection (restart) gets new nonces, hence new keys and fresh sequence
spaces. Until both nonces are known, nothing is sent to that peer in the clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import Any

import msgpack

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.flows import merge_datapath
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.router.overlay.base import MeshView, RouterContext
from weave_fdp.router.overlay.switch import Inputs, OverlaySwitch, fastdp_of

log = logging.getLogger("weave_fdp.overlay.sleeve")

TICK = 0.25          # s between switch decisions
SECRET_LABEL = b"weave-fdp sleeve secret v1"


class SleeveOverlay:
    """Overlay "sleeve": userspace forwarder + the overlay switch."""

    name = "sleeve"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.password: bytes | None = config.password.encode() if getattr(config, "password", None) else None
        self.switch = OverlaySwitch()
        self.fw: Forwarder | None = None
        self.ctx: RouterContext | None = None
        self.view: MeshView | None = None
        self._nonce: dict[str, bytes] = {}        # our nonce per peer connection
        self._peer_nonce: dict[str, bytes] = {}
        self._task: asyncio.Task | None = None
        self._prev_datapath: Any = None

    # ------------------------------------------------------------ lifecycle
    async def start(self, ctx: RouterContext) -> None:
        from weave_fdp.plumbing.sleeve_port import ensure_sleeve_port
        self.ctx = ctx
        ifname = await asyncio.to_thread(ensure_sleeve_port, None)
        port = int(getattr(self.config, "port", wire.PORT))
        self.fw = Forwarder(wire.name_to_bytes(ctx.local.name), ifname, port=port,
                            secret_for=self._secret_for, link_mtu=_underlay_mtu())
        self.fw.local_bcast_to = self._floods_by_sleeve
        self.fw.start()
        ctx.add_report_section("sleeve", self.status)
        # report["datapath"]: the sleeve's flows/peers/drops merged into what fastdp
        # (started before us, see OVERLAY_FACTORIES) put there, or alone with --no-fastdp.
        self._prev_datapath = ctx.report_sections.get("datapath")
        ctx.add_report_section("datapath", self.datapath_report)
        self._task = ctx.loop.create_task(self._tick_loop())

    def _floods_by_sleeve(self, hop: bytes) -> bool:
        """Whether this host's own floods go to ``hop`` by sleeve.

        fastdp knows better than the switch alone: a neighbour reached by fastdp may
        ask (a "floods" control message) that floods it relays into a sleeve link be
        sent to it by sleeve, since the kernel does not pass fastdp floods on to sleeve.
        """
        name = wire.bytes_to_name(hop)
        fd = fastdp_of(self.ctx)
        if fd is not None and hasattr(fd, "floods_by_sleeve"):
            return bool(fd.floods_by_sleeve(name))
        return self.switch.mode(name) == "sleeve"

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self.fw:
            await asyncio.to_thread(self.fw.stop)

    # ------------------------------------------------------------ mesh
    def on_mesh(self, view: MeshView) -> None:
        self.view = view
        for peer in list(self._nonce):
            if peer not in view.connections:
                self._nonce.pop(peer, None)
                self._peer_nonce.pop(peer, None)
                self.switch.forget(peer)
        for peer, c in view.connections.items():
            if c.established and "sleeve" in c.overlays and self.password and peer not in self._nonce:
                self._nonce[peer] = os.urandom(16)
                self._hello(peer)
        self._apply()

    def _apply(self) -> None:
        view, fw = self.view, self.fw
        if view is None or fw is None:
            return
        b = wire.name_to_bytes
        port = fw.port
        peers = {}
        for peer, c in view.connections.items():
            if not c.established or "sleeve" not in c.overlays:
                continue
            if self.password and self._secret_for(b(peer)) is None:
                continue     # keys not agreed yet: send nothing in the clear
            peers[b(peer)] = (c.remote_ip, port)
        fw.set_peers(peers)
        fw.set_routes({b(d): b(h) for d, h in view.unicast.items()},
                      {b(s): [b(h) for h in hs] for s, hs in view.broadcast.items()})

    # ------------------------------------------------------------ keys
    def _secret_for(self, peer: bytes) -> bytes | None:
        if not self.password or self.ctx is None:
            return None
        name = wire.bytes_to_name(peer)
        mine, theirs = self._nonce.get(name), self._peer_nonce.get(name)
        if mine is None or theirs is None:
            return None
        lo, hi = (mine, theirs) if self.ctx.local.name < name else (theirs, mine)
        return hashlib.sha256(SECRET_LABEL + self.password + lo + hi).digest()

    def _hello(self, peer: str) -> None:
        assert self.ctx is not None
        msg = {"o": "sleeve", "t": "hello", "n": self._nonce[peer], "e": self._peer_nonce.get(peer, b"")}
        self.ctx.send_overlay_control(peer, msgpack.packb(msg))

    def on_overlay_control(self, peer: str, payload: bytes) -> None:
        try:
            msg = msgpack.unpackb(payload, raw=False)
        except Exception:
            return       # another overlay's message
        if not isinstance(msg, dict) or msg.get("o") != "sleeve" or msg.get("t") != "hello":
            return
        n, echo = msg.get("n"), msg.get("e")
        if not isinstance(n, bytes) or len(n) != 16 or not self.password:
            log.warning("sleeve: bad key exchange message from %s", peer)
            return
        changed = self._peer_nonce.get(peer) != n
        self._peer_nonce[peer] = n
        if peer not in self._nonce:
            self._nonce[peer] = os.urandom(16)
        if echo != self._nonce[peer]:
            self._hello(peer)        # they have not seen our current nonce yet
        if changed:
            self._apply()

    # ------------------------------------------------------------ switch
    async def _tick_loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("overlay switch tick failed")
            await asyncio.sleep(TICK)

    def tick(self, now: float | None = None) -> None:
        view = self.view
        if view is None:
            return
        fd = fastdp_of(self.ctx)
        for peer, c in view.connections.items():
            if not c.established:
                continue
            inp = Inputs(local_fastdp=fd is not None, peer_fastdp="fastdp" in c.overlays,
                         encrypted=self.password is not None and not self._trusted(c.remote_ip),
                         can_encrypt=bool(getattr(fd, "supports_encryption", False)),
                         unusable=fd.unusable_reason(peer) if fd else None,
                         last_heartbeat=fd.last_heartbeat(peer) if fd else None)
            mode, _reason, changed = self.switch.decide(peer, inp, now)
            if changed and fd is not None:
                fd.set_mode(peer, mode)

    def _trusted(self, ip: str) -> bool:
        import ipaddress
        try:
            addr = ipaddress.ip_address(ip)
            return any(addr in ipaddress.ip_network(n, strict=False)
                       for n in getattr(self.config, "trusted_subnets", []) or [])
        except ValueError:
            return False

    # ------------------------------------------------------------ status
    def connection_status(self, peer: str) -> dict[str, Any]:
        sw = self.switch.status(peer)
        ps = self.fw.peer_status(wire.name_to_bytes(peer)) if self.fw else None
        fd = fastdp_of(self.ctx)
        if sw["mode"] == "fastdp" and fd is not None:
            return {"mode": "fastdp", "reason": None, "mtu": fd.mtu(peer), "rtt_ms": ps and ps["rtt_ms"]}
        if ps is None:
            why = "keys not agreed yet" if self.password else "peer has no sleeve"
            return {"mode": None, "reason": why, "mtu": None, "rtt_ms": None}
        if not ps["up"]:
            return {"mode": None, "reason": f"sleeve: no datagrams from {ps['addr']} (UDP blocked?)",
                    "mtu": ps["mtu"], "rtt_ms": None}
        return {"mode": "sleeve", "reason": sw["reason"], "mtu": ps["mtu"], "rtt_ms": ps["rtt_ms"]}

    def datapath_report(self) -> dict[str, Any]:
        """fastdp's ``datapath`` section (if any) with the sleeve's flows, peers and drops added."""
        base = None
        if self._prev_datapath is not None:
            try:
                base = self._prev_datapath()
            except Exception:
                log.exception("fastdp's datapath report failed; showing the sleeve's counters only")
        return merge_datapath(base if isinstance(base, dict) else None,
                              self.fw.datapath_report() if self.fw else {})

    def status(self) -> dict[str, Any]:
        st = self.fw.status() if self.fw else {}
        st["switch"] = {p: self.switch.status(p) for p in sorted(self.switch.conns)}
        return st


def _underlay_mtu() -> int:
    """MTU of the interface holding the default route, else of any up non-loopback interface."""
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1] == "00000000":
                    return int(open(f"/sys/class/net/{parts[0]}/mtu").read())
        for dev in sorted(os.listdir("/sys/class/net")):
            if dev in ("lo", "weave") or dev.startswith("veth"):
                continue
            return int(open(f"/sys/class/net/{dev}/mtu").read())
    except (OSError, ValueError, IndexError):
        pass
    return 1500


def make_overlay(config: Any) -> SleeveOverlay:
    return SleeveOverlay(config)
