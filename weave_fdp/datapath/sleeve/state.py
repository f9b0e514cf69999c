"""What the sleeve's transmit and receive sides share: configuration, peer links,
routing tables, counters, sockets, and the two ways out, each in one place:
``_sendmsg`` (a datagram or UDP GSO train to a peer) and ``_inject`` (a frame to
the bridge port), which count what left and name what failed.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import sockets as so
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import PieceAssembler, Reassembler
from weave_fdp.datapath.sleeve.drops import Drops
from weave_fdp.datapath.sleeve.crypto import Opener, Sealer, aesgcm_available
from weave_fdp.datapath.sleeve.flows import FlowTable, PeerCounters
from weave_fdp.datapath.sleeve.link import PeerLink
from weave_fdp.datapath.sleeve.pmtu import PmtuProber
from weave_fdp.datapath.sleeve.views import StridedViews
from weave_fdp.datapath.sleeve.drops import SleeveDrop

log = logging.getLogger("weave_fdp.sleeve")

MAC_TIMEOUT = 300.0          # s a learned MAC stays without frames from it
MAC_REFRESH = 30.0           # s between renewals of a learned MAC by the frames that keep coming from it
GSO_REFUSED = object()       # _sendmsg: the kernel refused UDP GSO (now off for good)


class SleeveState:
    """One host's sleeve state. ``local``: 6-byte peer name; ``ifname``: the capture port."""

    def __init__(self, local: bytes, ifname: str, *, bind_ip: str = "0.0.0.0", port: int = wire.PORT,
                 secret_for: Callable[[bytes], bytes | None] | None = None, link_mtu: int = 1500,
                 vnet: bool = True, udp_gso: bool = True, big: bool = True, pieces: bool = True) -> None:
        self.local = local
        self.header = wire.encode_header(local)     # the clear header of this sleeve's plain datagrams
        self.ifname = ifname
        self.bind_ip, self.port = bind_ip, port
        self.secret_for = secret_for or (lambda peer: None)
        self.link_mtu = link_mtu
        self.vnet = vnet
        self.udp_gso = udp_gso
        self.big = big
        self.pieces = pieces        # speak wire v2 (advertise it; send pieces to v2 peers)
        # This host takes frames over 64 KiB (IPv4 BIG TCP super-frames; heartbeats say so with
        # FEATURE_BIG): set by whoever sized the bridge ports for them (kernel 6.3+, sleeve-only).
        self.big_frames = False
        # Capture from a TPACKET_V2 receive ring (sockets.CaptureRing): off. Under a 64-byte UDP
        # flood the reader lost step with the kernel's ring head (its slot empty, frames in the
        # next ones, poll readable for ever: the data thread spun and forwarding stopped), and
        # the ring gave 1.00-1.05x at best (docs/SLEEVE.md). recv until that is understood.
        self.capture_ring = False
        self.capture_mode: str | None = None   # what the capture thread reads from: "ring" or "recv"
        self.aesgcm = aesgcm_available()
        self.links: dict[bytes, PeerLink] = {}
        self.unicast: dict[bytes, bytes] = {}
        self.broadcast: dict[bytes, list[bytes]] = {}
        self.local_bcast_to: Callable[[bytes], bool] = lambda hop: True   # switch: hop in sleeve mode?
        self.macs: dict[bytes, tuple[bytes, float]] = {}
        # Bumped after any change to what decides a captured frame's way (links, routes, a MAC
        # learned, moved or forgotten): the capture thread's route cache is valid while it holds.
        self.route_gen = 0
        self._hops: dict[bytes, tuple[bytes, PeerLink]] = {}   # capture thread: MAC -> (peer, its one hop)
        self._hops_gen = -1
        self._views: StridedViews | None = None   # capture thread: piece views of its buffer
        self._rx_views: StridedViews | None = None   # receive thread: chunk views of its buffer
        self.drops = Drops()
        self.stats = dict(captured=0, injected=0, relayed=0, icmp_too_big=0, fragmented=0, reassembled=0,
                          gro_batches=0, pieced_tx=0, pieced_rx=0, piece_trains=0, big_tx=0, cut_big=0)
        self.on_peer_change: Callable[[bytes, bool], None] | None = None
        self.tx_flows = FlowTable()     # written by the capture thread only
        self.rx_flows = FlowTable()     # written by the receive thread only
        self.tx_peers = PeerCounters()  # inner frames toward a peer (capture thread)
        self.rx_peers = PeerCounters()  # inner frames from a peer (receive thread)
        self._frag_ids = itertools.count(1)
        self._rx_now = time.monotonic()
        # Relays re-fragmenting a frame pick ids with the top bit set, away from origins' ids.
        self._relay_frag_ids = itertools.count(0x80000000 | int.from_bytes(os.urandom(3), "big") << 4)
        self._reasm = Reassembler()
        self._pieces = PieceAssembler()
        self._running = False
        self._threads: list[threading.Thread] = []
        self.psock: socket.socket | None = None
        self.usock: socket.socket | None = None
        self.probe_sock: socket.socket | None = None
        self.gro = False
        self._no_check: bool | None = None

    # ---- configuration (thread-safe enough: whole-dict replacement) ----

    def set_peers(self, peers: dict[bytes, tuple[str, int]]) -> None:
        """Direct neighbours and their underlay (ip, port). Keeps state of unchanged ones."""
        links = {}
        for name, addr in peers.items():
            old = self.links.get(name)
            secret = self.secret_for(name)
            if old is not None and old.addr == addr and (old.sealer is None) == (secret is None) \
                    and (secret is None or old.sealer.key == Sealer(secret, self.local, name).key):
                links[name] = old
                continue
            links[name] = PeerLink(
                name, addr,
                Sealer(secret, self.local, name) if secret is not None else None,
                Opener(secret, self.local, name) if secret is not None else None,
                PmtuProber(self.link_mtu, big=self.big), gso_train=self.udp_gso and secret is None)
        self.links = links
        self.route_gen += 1
        self._set_udp_checksums(self._checksums_needed())

    def set_routes(self, unicast: dict[bytes, bytes], broadcast: dict[bytes, list[bytes]]) -> None:
        self.unicast, self.broadcast = unicast, broadcast
        gone = [m for m, (p, _) in self.macs.items() if p not in unicast]
        for m in gone:
            self.macs.pop(m, None)
        self.route_gen += 1

    def _checksums_needed(self) -> bool:
        links = self.links.values()
        return not links or any(l.sealer is None or l.version >= 2 for l in links)

    def _set_udp_checksums(self, on: bool) -> None:
        """Sealed datagrams carry a MAC, so their UDP checksum only costs a pass over 64 KiB
        on each side (fragmented datagrams get no checksum offload): off when every link is
        sealed and sends big datagrams (SO_NO_CHECK: checksum 0, which IPv4 receivers accept
        without verifying). On as soon as a link sends pieces: the kernel refuses UDP GSO
        with SO_NO_CHECK (EINVAL), and GSO trains get checksum offload anyway."""
        if self.usock is None or self._no_check == (not on):
            return
        try:
            self.usock.setsockopt(socket.SOL_SOCKET, so.SO_NO_CHECK, 0 if on else 1)
            self._no_check = not on
        except OSError:
            pass

    # ---- the ways out ----

    def _sendmsg(self, link: PeerLink, iov: list, *, segments: int = 1, seg: int = 0,
                 sock: socket.socket | None = None) -> Any:
        """Send ``iov`` to ``link`` in one sendmsg: one datagram, or with ``segments`` > 1
        a UDP_SEGMENT train of ``seg``-byte datagrams. Counts them on the link and returns
        the bytes sent; None when they were dropped (counted by reason); ``GSO_REFUSED``
        when the kernel refused UDP GSO, which is then off for good (the caller sends
        the datagrams another way)."""
        try:
            sent = (sock or self.usock).sendmsg(iov, so.gso_cmsg(seg) if segments > 1 else [], socket.MSG_DONTWAIT,
                                                link.addr)
        except BlockingIOError:
            self.drops.drop(SleeveDrop.SEND_QUEUE_FULL)
            return None
        except OSError as exc:
            if segments > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                log.warning("sleeve: UDP GSO refused (%s): off from now on, datagrams leave one by one "
                            "and frames bigger than the path as version-1 fragments", exc)
                self.udp_gso = False
                return GSO_REFUSED
            if exc.errno == errno.EMSGSIZE:
                self.drops.drop(SleeveDrop.TOO_BIG, f"to {wire.bytes_to_name(link.name)}")
            else:
                self.drops.drop(SleeveDrop.SEND_ERROR, f"{errno.errorcode.get(exc.errno, exc.errno)} to "
                                                       f"{wire.bytes_to_name(link.name)}: {exc}")
            return None
        st = link.stats
        st["tx_pkts"] += segments
        st["tx_bytes"] += sent
        return sent

    def _parts(self, link: PeerLink, body: bytes | memoryview) -> list:
        """The datagram as iovecs: sealed (one libsodium pass into a fresh buffer) or header + body."""
        return link.sealer.seal_parts(body) if link.sealer else [self.header, body]

    def _send(self, link: PeerLink, body: bytes | memoryview, sock: socket.socket | None = None) -> None:
        """One body (type byte + payload) to ``link`` in one datagram, sealed on sealed links."""
        self._sendmsg(link, self._parts(link, body), sock=sock)

    def _inject_parts(self, vnet: int | None, parts: list) -> bool:
        """``_inject`` of a frame given as iovecs (the kernel joins them into one skb)."""
        return self._injected(self.psock.sendmsg, [fr.VNET_ZERO, *parts] if self.vnet and vnet == 0 else parts, [],
                              socket.MSG_DONTWAIT)

    def _inject(self, vnet: int | None, payload: bytes | memoryview) -> bool:
        """Write a frame to the bridge port; ``vnet`` 0 prepends an empty vnet header."""
        if self.vnet and vnet == 0:
            return self._injected(self.psock.sendmsg, [fr.VNET_ZERO, payload], [], socket.MSG_DONTWAIT)
        return self._injected(self.psock.send, payload, socket.MSG_DONTWAIT)

    def _injected(self, call: Callable[..., int], *args: Any) -> bool:
        """One write to the bridge port: counted, or dropped by reason (a full queue never waits)."""
        try:
            call(*args)
        except BlockingIOError:
            self.drops.drop(SleeveDrop.INJECT_QUEUE_FULL)
            return False
        except OSError as exc:
            self.drops.drop(SleeveDrop.INJECT_ERROR, f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc}")
            return False
        self.stats["injected"] += 1
        return True
