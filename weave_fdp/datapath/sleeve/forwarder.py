"""The sleeve forwarder: frames between the bridge port and UDP 6783, relayed by peer.

Three threads (syscalls release the GIL, so capture and receive overlap on 2 cores):
- capture (``transmit.py``): bridge port -> batch per next hop -> UDP;
- receive (``receive.py``): UDP -> open/verify -> deliver to the bridge port, learn
  MAC -> peer, relay entries for other peers;
- timer (here): heartbeats, PMTU probes, expiry.

Where each frame goes is decided by the pure functions of ``decide.py``; the state
both sides share, and the one place datagrams and frames leave, is ``state.py``.
The caller keeps the peer table and routes current with ``set_peers`` /
``set_routes`` (the router does it from the mesh; the standalone runner from a
static file). This module is the lifecycle: start, stop, the timer, status.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

from weave_fdp.datapath.sleeve import sockets as so
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.flows import peer_rows
from weave_fdp.datapath.sleeve.link import PEER_TIMEOUT, PeerLink
from weave_fdp.datapath.sleeve.receive import Receive
from weave_fdp.datapath.sleeve.state import MAC_TIMEOUT, log
from weave_fdp.datapath.sleeve.drops import SleeveDrop

__all__ = ["Forwarder", "PeerLink", "HEARTBEAT_INTERVAL", "MAC_TIMEOUT"]

HEARTBEAT_INTERVAL = 0.5     # s


def _native_name(name: str) -> None:
    """Give this thread its name in the kernel too (``PR_SET_NAME``, 15 bytes): ``top -H``,
    ``/proc/PID/task/*/comm`` and ``perf`` then tell sleeve-data from sleeve-timer."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


PR_SET_NAME = 15


class Forwarder(Receive):
    """One host's sleeve: ``start`` it, keep its peers and routes current, ``stop`` it."""

    # ---- lifecycle ----

    def start(self) -> None:
        self.psock = so.packet_socket(self.ifname, vnet=self.vnet)
        self.usock, self.gro = so.udp_socket(self.bind_ip, self.port)
        self.probe_sock = so.probe_socket(self.bind_ip)
        self._set_udp_checksums(self._checksums_needed())
        self._running = True
        for fn, nm in ((self._data_loop, "data"), (self._timer_loop, "timer")):
            t = threading.Thread(target=self._guard(fn), name=f"sleeve-{nm}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("sleeve up on %s, UDP %s:%d (vnet=%s, gro=%s)", self.ifname, self.bind_ip, self.port,
                 self.vnet, self.gro)

    def stop(self) -> None:
        self._running = False
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()
        for s in (self.psock, self.usock, self.probe_sock):
            if s is not None:
                s.close()
        self.psock = self.usock = self.probe_sock = None

    def reopen_port(self) -> None:
        """Capture and inject on a new AF_PACKET socket: the port was recreated (new ifindex).

        The data thread notices the swap within its 200 ms poll and closes the old one.
        """
        self.psock = so.packet_socket(self.ifname, vnet=self.vnet)
        log.warning("sleeve: capture port %s reopened", self.ifname)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            _native_name(threading.current_thread().name)
            while self._running:
                try:
                    fn()
                except Exception:   # a bug: log it loudly and keep serving
                    log.exception("sleeve thread %s crashed; restarting it", threading.current_thread().name)
                    time.sleep(0.1)
        return run

    def _data_loop(self) -> None:
        """Both directions in one thread (see ``Transmit._serve``): the capture port and the
        UDP socket. Returns when the port was reopened (``_guard`` starts it again on the new one)."""
        self._serve([self._capture_source(), self._receive_source()])

    # ---- timer ----

    def _features(self) -> int:
        """Heartbeat feature bits: what this sleeve takes from a version-2 peer."""
        if not self.pieces:
            return 0
        return (wire.FEATURE_AESGCM if self.aesgcm else 0) | (wire.FEATURE_BIG if self.big_frames else 0)

    def _timer_loop(self) -> None:
        while self._running:
            now = time.monotonic()
            for link in list(self.links.values()):
                if link.last_rx and not link.is_up(now) and link.up_since is not None:
                    link.up_since = None
                    log.warning("sleeve: peer %s silent for %.0f s: down", wire.bytes_to_name(link.name),
                                PEER_TIMEOUT)
                    if self.on_peer_change:
                        self.on_peer_change(link.name, False)
                self._send(link, wire.encode_heartbeat(
                    time.monotonic_ns(), link.prober.payload, wire.PIECE_VERSION if self.pieces else wire.VERSION,
                    self._features()))
                for pid, size, df in link.prober.due(now):
                    body = wire.encode_probe(pid, size, link.overhead())
                    self._send(link, body, self.probe_sock if df else None)
                if link.prober.lost and not link.prober.lost_reported and link.is_up(now):
                    link.prober.lost_reported = True
                    self.drops.drop(SleeveDrop.PMTU_UNANSWERED, wire.bytes_to_name(link.name))
            self._reasm.expire(now)
            self._pieces.expire(now)
            if self._reasm.expired or self._pieces.expired:
                self.drops.set(SleeveDrop.REASSEMBLY_TIMEOUT, self._reasm.expired + self._pieces.expired)
            stale = [m for m, (_, t) in self.macs.items() if now - t > MAC_TIMEOUT]
            for m in stale:
                self.macs.pop(m, None)
            if stale:
                self.route_gen += 1
            time.sleep(HEARTBEAT_INTERVAL)

    # ---- status ----

    def peer_status(self, name: bytes) -> dict | None:
        link = self.links.get(name)
        if link is None:
            return None
        now = time.monotonic()
        return {
            "peer": wire.bytes_to_name(name), "addr": f"{link.addr[0]}:{link.addr[1]}",
            "up": link.is_up(now), "encrypted": link.sealer is not None,
            "pmtu": link.prober.payload, "pmtu_discovered": link.prober.settled, "mtu": link.mtu(),
            "big_datagrams": link.prober.big_ok, "wire_version": link.version,
            "peer_wire_version": link.peer_version,
            "takes_big_frames": link.takes_big,
            "cipher": None if link.sealer is None else ("aes256gcm" if link.aesgcm else "xsalsa20poly1305"),
            "rtt_ms": None if link.rtt_ms is None else round(link.rtt_ms, 3), **link.stats,
        }

    def status(self) -> dict:
        return {
            "local": wire.bytes_to_name(self.local), "port": self.port, "vnet": self.vnet, "gro": self.gro,
            "udp_gso": self.udp_gso, "capture": self.capture_mode, "big_frames": self.big_frames,
            "peers": [self.peer_status(n) for n in sorted(self.links)],
            "macs": len(self.macs), "stats": dict(self.stats), "drops": self.drops.snapshot(),
            "flow_count": len(self.tx_flows) + len(self.rx_flows),
        }

    def datapath_report(self) -> dict:
        """The sleeve's part of ``report["datapath"]``: flows, per-peer frame counters, drops."""
        name = wire.bytes_to_name
        return {"flows": self.tx_flows.snapshot("tx", name) + self.rx_flows.snapshot("rx", name),
                "peers": peer_rows(self.tx_peers, self.rx_peers, name),
                "drops": self.drops.snapshot()}
