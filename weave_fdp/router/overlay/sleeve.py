"""The sleeve as a router overlay.

The router loads this module by name (``OVERLAY_FACTORIES``) and calls
``make_overlay(config)``. The sleeve runs on every connection whose peer
advertises it (the fallback is always warm); the router's overlay switch
(``ctx.switch``, see :mod:`weave_fdp.router.overlay.switch`) decides per
connection whether fastdp or the sleeve carries traffic.

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
from typing import Any

import msgpack

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.flows import merge_datapath
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.sizing import PORT_GSO_MAX
from weave_fdp.plumbing.links import link_index
from weave_fdp.router.overlay.base import MeshView, RouterContext
from weave_fdp.router.overlay.switch import SLEEVE, fastdp_of, switch_of

log = logging.getLogger("weave_fdp.overlay.sleeve")

SECRET_LABEL = b"weave-fdp sleeve secret v1"
PORT_CHECK_EVERY = 2.0   # s between checks that the capture port is still there


class SleeveOverlay:
    """Overlay "sleeve": the userspace forwarder driven by the mesh."""

    name = "sleeve"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.password: bytes | None = config.password.encode() if getattr(config, "password", None) else None
        self.fw: Forwarder | None = None
        self.ctx: RouterContext | None = None
        self.view: MeshView | None = None
        self._port_ifindex: int | None = None     # the capture port the forwarder's socket is bound to
        self._watch_task: asyncio.Task | None = None
        self.port_repairs = 0
        self._nonce: dict[str, bytes] = {}        # our nonce per peer connection
        self._peer_nonce: dict[str, bytes] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self, ctx: RouterContext) -> None:
        from weave_fdp.plumbing.sleeve_port import ensure_sleeve_port
        self.ctx = ctx
        ifname = await asyncio.to_thread(ensure_sleeve_port, None, gso_ipv4_max_size=PORT_GSO_MAX)
        port = int(getattr(self.config, "port", wire.PORT))
        self.fw = Forwarder(wire.name_to_bytes(ctx.local.name), ifname, port=port,
                            secret_for=self._secret_for, link_mtu=_underlay_mtu())
        self.fw.local_bcast_to = self._floods_by_sleeve
        self.fw.start()
        self._port_ifindex = await asyncio.to_thread(link_index, ifname)
        self._watch_task = ctx.loop.create_task(self._watch_loop())
        ctx.add_report_section("sleeve", self.status)
        # report["datapath"]: the sleeve's flows/peers/drops merged into fastdp's, or alone
        ctx.add_report_section("datapath", self.datapath_report, merge=merge_datapath)

    def _floods_by_sleeve(self, hop: bytes) -> bool:
        """Whether this host's own floods go to ``hop`` by sleeve.

        fastdp knows better than the switch alone: a neighbour reached by fastdp may
        ask (a "floods" control message) that floods it relays into a sleeve link be
        sent to it by sleeve, since the kernel does not pass fastdp floods on to sleeve.
        """
        name = wire.bytes_to_name(hop)
        fd = fastdp_of(self.ctx)
        if fd is not None:
            return bool(fd.floods_by_sleeve(name))
        sw = switch_of(self.ctx)
        return sw is None or sw.mode(name) == SLEEVE

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self.fw:
            await asyncio.to_thread(self.fw.stop)

    # ------------------------------------------------------------ port watchdog
    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(PORT_CHECK_EVERY)
            try:
                await asyncio.to_thread(self.check_port)
            except Exception as exc:
                log.warning("sleeve: cannot check or repair the capture port: %s", exc)

    def check_port(self) -> str | None:
        """Put back the sleeve's port on bridge ``weave`` if it was removed or left the
        bridge, and reopen the capture socket on a new one; what was wrong, or None."""
        from weave_fdp.plumbing.container_link import reattach_orphans
        from weave_fdp.plumbing.links import get_link
        from weave_fdp.plumbing.sleeve_port import BRIDGE, BRIDGE_END, PCAP_END, ensure_sleeve_port

        assert self.fw is not None
        idx = link_index(PCAP_END)
        end = get_link(BRIDGE_END) if link_index(BRIDGE_END) is not None else None
        if idx is not None and idx == self._port_ifindex and end is not None and end.master is not None:
            return None
        if link_index(BRIDGE) is None and fastdp_of(self.ctx) is not None:
            return None     # fastdp's watchdog makes the bridge again (with its MTU) and re-enslaves us
        why = (f"{PCAP_END} is gone" if idx is None else f"{PCAP_END} was replaced" if idx != self._port_ifindex
               else f"{BRIDGE_END} left bridge {BRIDGE}")
        ensure_sleeve_port(None, gso_ipv4_max_size=PORT_GSO_MAX)
        reattach_orphans()
        new = link_index(PCAP_END)
        if new != self._port_ifindex:
            self.fw.reopen_port()
            self._port_ifindex = new
        self.port_repairs += 1
        log.warning("sleeve: capture port repaired (%s)", why)
        return why

    # ------------------------------------------------------------ mesh
    def on_mesh(self, view: MeshView) -> None:
        self.view = view
        for peer in list(self._nonce):
            if peer not in view.connections:
                self._nonce.pop(peer, None)
                self._peer_nonce.pop(peer, None)
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

    # ------------------------------------------------------------ status
    def connection_status(self, peer: str) -> dict[str, Any]:
        """The sleeve's own view of ``peer``: mode "sleeve" when it can carry it (the
        router's switch decides whether it does; see daemon.connection_mode)."""
        ps = self.fw.peer_status(wire.name_to_bytes(peer)) if self.fw else None
        if ps is None:
            why = "keys not agreed yet" if self.password else "peer has no sleeve"
            return {"mode": None, "reason": why, "mtu": None, "rtt_ms": None}
        if not ps["up"]:
            return {"mode": None, "reason": f"no datagrams from {ps['addr']} (UDP blocked?)",
                    "mtu": ps["mtu"], "rtt_ms": None}
        # with --password every datagram is sealed (trusted subnets or not)
        return {"mode": "sleeve", "reason": None, "mtu": ps["mtu"], "rtt_ms": ps["rtt_ms"],
                "encrypted": True if self.password else None}

    def datapath_report(self) -> dict[str, Any]:
        """The sleeve's flows, peers and drops (merged into fastdp's by ``merge_datapath``)."""
        return self.fw.datapath_report() if self.fw else {}

    def status(self) -> dict[str, Any]:
        st = self.fw.status() if self.fw else {}
        st["port_repairs"] = self.port_repairs
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
