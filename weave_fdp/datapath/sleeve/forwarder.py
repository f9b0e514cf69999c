"""The sleeve forwarder: frames between the bridge port and UDP 6783, relayed by peer.

Threads (syscalls release the GIL, so capture and receive overlap on 2 cores):
- capture: bridge port -> batch per next hop -> UDP (GSO super-frames are
  fragmented and sent with one UDP_SEGMENT sendmsg);
- receive: UDP -> open/verify -> deliver to the bridge port, learn MAC -> peer,
  relay entries for other peers;
- timer: heartbeats, PMTU probes, expiry.

Routing is by destination *peer*: the MAC table maps container MACs to the peer
they live on (learned from received frames); unknown and group MACs follow the
broadcast tree of the source peer. The caller keeps the peer table and routes
current with ``set_peers`` / ``set_routes`` (the router does it from the mesh; the
standalone runner from a static file).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import sockets as so
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import (FRAG_BODY_OVERHEAD, TYPE_FRAMES, Batcher, PieceAssembler, Reassembler,
                                              fragment)
from weave_fdp.datapath.sleeve.counters import Drops
from weave_fdp.datapath.sleeve.crypto import Opener, Sealer, aesgcm_available
from weave_fdp.datapath.sleeve.flows import FlowTable, PeerCounters, peer_rows
from weave_fdp.datapath.sleeve.pmtu import BIG_PAYLOAD, PmtuProber

log = logging.getLogger("weave_fdp.sleeve")

HEARTBEAT_INTERVAL = 0.5     # s
PEER_TIMEOUT = 3.0           # s without any datagram: the peer's sleeve is down
MAC_TIMEOUT = 300.0          # s a learned MAC stays
DRAIN = 64                   # frames read per wake-up before flushing batches
GSO_MAX_BYTES = 65000        # UDP payload per UDP_SEGMENT sendmsg
GSO_MAX_SEGS = 64
_TOTAL_OFFSET = struct.Struct("!II")   # total, offset of a piece (at byte 16)
FAST_MIN = wire.HEADER.size + 1 + wire.ENTRY.size + wire.FRAG.size + 1
HEADROOM = 64                # bytes before a captured frame: room to build its datagram in place
TAILROOM = 16                # bytes after it: the AES-256-GCM tag of a frame sealed in place
DIRECT_MIN = 8192            # frames at least this big bypass the batcher (sent alone, no copy)
GSO_REFUSED = object()       # _gso_send: the kernel refused UDP GSO


@dataclass
class PeerLink:
    """State of the sleeve towards one direct neighbour."""

    name: bytes
    addr: tuple[str, int]
    sealer: Sealer | None
    opener: Opener | None
    prober: PmtuProber
    last_rx: float = 0.0
    rtt_ms: float | None = None
    up_since: float | None = None
    # Plain links with UDP GSO send super-frames as GSO trains of fragments even when big
    # datagrams pass: measured faster (the train crosses veths/bridges as one skb and
    # arrives in one GRO read; kernel IP fragments are ~45 skbs). Sealed links use big
    # datagrams: one seal per super-frame instead of ~45 is what makes encryption fast.
    gso_train: bool = False
    # Wire version in use with the peer: the highest both speak. From 2 on, frames bigger than
    # the path leave as one logical datagram (sealed once) cut into a UDP GSO train of
    # pieces: one skb through the underlay instead of ~45 IP fragments (see ``_send_pieces``).
    version: int = 1
    peer_version: int | None = None   # highest version the peer's heartbeats advertise (None: none yet)
    aesgcm: bool = False         # seal pieces with AES-256-GCM (both ends have it)
    tx_seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))   # plain pieces' ids
    stats: dict[str, int] = field(default_factory=lambda: dict(tx_pkts=0, tx_bytes=0, rx_pkts=0, rx_bytes=0))

    def is_up(self, now: float) -> bool:
        return now - self.last_rx < PEER_TIMEOUT

    def overhead(self) -> int:
        return wire.HEADER.size + (wire.SEAL_OVERHEAD if self.sealer else 0)

    def path_limit(self) -> int:
        """Largest body of a datagram that crosses the path unfragmented (PMTU)."""
        return self.prober.payload - self.overhead()

    def body_limit(self) -> int:
        """Largest body one datagram to this peer may carry: a big one (the kernels
        fragment and reassemble it) once the big probe proved fragments pass."""
        big = self.prober.big_ok and not self.gso_train
        return (BIG_PAYLOAD if big else self.prober.payload) - self.overhead()

    def frame_capacity(self) -> int:
        """Largest Ethernet frame (wire segment) that fits one unfragmented datagram even
        with a vnet header: what containers may send (the MTU we advertise and enforce
        with ICMP), so the connection keeps working if fragments stop passing."""
        return self.path_limit() - 1 - wire.ENTRY.size - wire.VNET_LEN

    def mtu(self) -> int:
        """L3 MTU a container sees through this connection."""
        return self.frame_capacity() - 14


def _check_source(link: PeerLink, addr: tuple[str, int]) -> None:
    """A datagram naming ``link``'s peer as its sender must come from that peer's underlay
    address (the one of its control connection): anyone else on the underlay could
    otherwise inject frames in its name (without a password nothing else proves it)."""
    if addr[0] != link.addr[0]:
        raise wire.WireError("wrong source address", f"datagram from {addr[0]} claims peer "
                                                     f"{wire.bytes_to_name(link.name)} at {link.addr[0]}")


class Forwarder:
    """One host's sleeve. ``local``: 6-byte peer name; ``ifname``: the capture port."""

    def __init__(self, local: bytes, ifname: str, *, bind_ip: str = "0.0.0.0", port: int = wire.PORT,
                 secret_for: Callable[[bytes], bytes | None] | None = None, link_mtu: int = 1500,
                 vnet: bool = True, udp_gso: bool = True, big: bool = True, pieces: bool = True) -> None:
        self.local = local
        self.ifname = ifname
        self.bind_ip, self.port = bind_ip, port
        self.secret_for = secret_for or (lambda peer: None)
        self.link_mtu = link_mtu
        self.vnet = vnet
        self.udp_gso = udp_gso
        self.big = big
        self.pieces = pieces        # speak wire v2 (advertise it; send pieces to v2 peers)
        self.aesgcm = aesgcm_available()
        self.links: dict[bytes, PeerLink] = {}
        self.unicast: dict[bytes, bytes] = {}
        self.broadcast: dict[bytes, list[bytes]] = {}
        self.local_bcast_to: Callable[[bytes], bool] = lambda hop: True   # switch: hop in sleeve mode?
        self.macs: dict[bytes, tuple[bytes, float]] = {}
        self.drops = Drops()
        self.stats = dict(captured=0, injected=0, relayed=0, icmp_too_big=0, fragmented=0, reassembled=0,
                          gro_batches=0, pieced_tx=0, pieced_rx=0)
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
        self._set_udp_checksums(self._checksums_needed())

    def _checksums_needed(self) -> bool:
        links = self.links.values()
        return not links or any(l.sealer is None or l.version >= 2 for l in links)

    def _set_udp_checksums(self, on: bool) -> None:
        """Sealed datagrams carry a MAC, so their UDP checksum only costs a pass over 64 KiB
        on each side (fragmented datagrams get no checksum offload): off when every link is
        sealed and sends big datagrams (SO_NO_CHECK: checksum 0, which IPv4 receivers accept
        without verifying). On as soon as a link sends pieces: the kernel refuses UDP GSO
        with SO_NO_CHECK (EINVAL), and GSO trains get checksum offload anyway."""
        if self.usock is None or getattr(self, "_no_check", None) == (not on):
            return
        try:
            self.usock.setsockopt(socket.SOL_SOCKET, so.SO_NO_CHECK, 0 if on else 1)
            self._no_check = not on
        except OSError:
            pass

    def set_routes(self, unicast: dict[bytes, bytes], broadcast: dict[bytes, list[bytes]]) -> None:
        self.unicast, self.broadcast = unicast, broadcast
        gone = [m for m, (p, _) in self.macs.items() if p not in unicast]
        for m in gone:
            self.macs.pop(m, None)

    # ---- lifecycle ----

    def start(self) -> None:
        self.psock = so.packet_socket(self.ifname, vnet=self.vnet)
        self.usock, self.gro = so.udp_socket(self.bind_ip, self.port)
        self.probe_sock = so.probe_socket(self.bind_ip)
        self._set_udp_checksums(self._checksums_needed())
        self._running = True
        for fn, nm in ((self._capture_loop, "capture"), (self._receive_loop, "receive"), (self._timer_loop, "timer")):
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

        The capture thread notices the swap within its 200 ms poll and closes the old one.
        """
        self.psock = so.packet_socket(self.ifname, vnet=self.vnet)
        log.warning("sleeve: capture port %s reopened", self.ifname)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while self._running:
                try:
                    fn()
                except Exception:   # a bug: log it loudly and keep serving
                    log.exception("sleeve thread %s crashed; restarting it", threading.current_thread().name)
                    time.sleep(0.1)
        return run

    # ---- sending ----

    def _parts(self, link: PeerLink, body: bytes | memoryview) -> list:
        """The datagram as iovecs: sealed (one libsodium pass into a fresh buffer) or header + body."""
        return link.sealer.seal_parts(body) if link.sealer else [wire.encode_header(self.local), body]

    def _send(self, link: PeerLink, body: bytes | memoryview, sock: socket.socket | None = None) -> None:
        self._transmit(link, self._parts(link, body), sock)

    def _send_datagram(self, link: PeerLink, data: bytes) -> None:
        """An already framed (and, on sealed links, sealed) datagram."""
        self._transmit(link, [data])

    def _transmit(self, link: PeerLink, parts: list, sock: socket.socket | None = None) -> None:
        """One datagram from ``parts``; counted on the link, or its failure counted and handled."""
        try:
            sent = (sock or self.usock).sendmsg(parts, [], 0, link.addr)
        except BlockingIOError:
            self.drops.drop("udp send queue full")
            return
        except OSError as exc:
            self._send_error(exc, link)
            return
        link.stats["tx_pkts"] += 1
        link.stats["tx_bytes"] += sent

    def _send_many(self, link: PeerLink, bodies: list[bytes]) -> None:
        """Datagrams of equal size (all but the last): one UDP_SEGMENT sendmsg per 64 KiB
        when the segments fit the path unfragmented (the kernel's GSO needs that)."""
        datas = [b"".join(self._parts(link, b)) for b in bodies]
        seg = len(datas[0])
        if not self.udp_gso or len(datas) == 1 or seg > link.prober.payload:
            for d in datas:
                self._send_datagram(link, d)
            return
        per = max(1, min(GSO_MAX_SEGS, GSO_MAX_BYTES // seg))
        for i in range(0, len(datas), per):
            group = datas[i:i + per]
            sent = self._gso_send(link, group, seg, "sending datagrams one by one")
            if sent is GSO_REFUSED:
                for d in group:
                    self._send_datagram(link, d)
            elif sent is not None:
                link.stats["tx_pkts"] += len(group)
                link.stats["tx_bytes"] += sent

    def _gso_send(self, link: PeerLink, iov: list, seg: int, fallback: str, *, count: int | None = None) -> Any:
        """One ``UDP_SEGMENT`` sendmsg of ``iov`` (segments of ``seg`` bytes; a plain
        sendmsg for a single segment). Returns the bytes sent; None when it failed
        (counted); ``GSO_REFUSED`` when the kernel refused UDP GSO, which is then
        off for good (logged once, saying what happens instead: ``fallback``)."""
        segments = len(iov) if count is None else count
        try:
            return self.usock.sendmsg(iov, so.gso_cmsg(seg) if segments > 1 else [], 0, link.addr)
        except BlockingIOError:
            self.drops.drop("udp send queue full")
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                log.warning("sleeve: UDP GSO refused (%s); %s", exc, fallback)
                self.udp_gso = False
                return GSO_REFUSED
            self._send_error(exc, link)
        return None

    def _send_error(self, exc: OSError, link: PeerLink) -> None:
        if exc.errno == errno.EMSGSIZE:
            self.drops.drop("datagram too big for link", f"to {wire.bytes_to_name(link.name)}")
        else:
            self.drops.drop(f"send error {errno.errorcode.get(exc.errno, exc.errno)}", str(exc))

    # ---- capture: bridge -> peers ----

    def _capture_loop(self) -> None:
        s = self.psock
        buf = bytearray(HEADROOM + 70000 + TAILROOM)
        mv = memoryview(buf)
        rmv = mv[HEADROOM:HEADROOM + 70000]       # the tailroom stays free for an AES-GCM tag
        poller = select.poll()
        poller.register(s, select.POLLIN)
        batcher = Batcher()
        vlen = wire.VNET_LEN if self.vnet else 0
        while self._running:
            if s is not self.psock:      # reopen_port() swapped the socket: restart on the new one
                s.close()
                return
            n_read = 0
            now = time.monotonic()
            self.tx_flows.maybe_age(now)
            while n_read < DRAIN:
                try:
                    n = s.recv_into(rmv)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self.drops.drop("capture error", str(exc))
                    break
                n_read += 1
                if n < vlen + 14:
                    continue
                self.stats["captured"] += 1
                try:
                    self._outbound(mv, n, vlen, batcher, now)
                except Exception as exc:   # a bug on one frame must not stop the sleeve
                    self.drops.drop("capture bug", repr(exc))
                    log.debug("capture bug", exc_info=True)
            self._flush(batcher)
            if n_read < DRAIN:
                poller.poll(200)

    def _flush(self, batcher: Batcher) -> None:
        """Send what one read burst batched, one datagram per next hop and batch."""
        for hop, body in batcher.drain():
            link = self.links.get(hop)
            if link is not None:
                self._send(link, body)

    def _outbound(self, mv: memoryview, n: int, vlen: int, batcher: Batcher, now: float) -> None:
        """Route one captured frame: ``mv[HEADROOM:HEADROOM + n]`` = vnet header + Ethernet frame.

        Big frames to one peer are sealed/sent where they were captured (no copy);
        others are copied once into the batcher.
        """
        data = mv[HEADROOM:HEADROOM + n]
        dst_mac = bytes(data[vlen:vlen + 6])
        if fr.is_multicast(dst_mac):
            hops = [h for h in self.broadcast.get(self.local, ()) if self.local_bcast_to(h)]
            dst = wire.BROADCAST
        else:
            known = self.macs.get(dst_mac)
            if known is None:    # unknown unicast: flood like Weave does
                hops = [h for h in self.broadcast.get(self.local, ()) if self.local_bcast_to(h)]
                dst = wire.BROADCAST
            else:
                dst = known[0]
                hop = self.unicast.get(dst)
                if hop is None:
                    self.drops.drop("no route to peer", wire.bytes_to_name(dst))
                    return
                hops = [hop]
        flags = wire.E_VNET if vlen and data[:vlen] != fr.VNET_ZERO else 0
        off = 0 if flags else vlen                       # an all-zero vnet header is dropped
        plen = n - off
        payload: bytes | None = None
        sent_via = None
        for hop in hops:
            link = self.links.get(hop)
            if link is None:
                self.drops.drop("next hop has no sleeve", wire.bytes_to_name(hop))
                continue
            if len(hops) == 1 and link.version >= 2 and self.udp_gso and self.pieces \
                    and 1 + wire.ENTRY.size + plen > link.path_limit():
                if self._too_big(link, flags, data[off:]):
                    continue
                ok = self._send_pieces(link, mv, HEADROOM + off, plen, dst, flags, batcher)
            elif len(hops) == 1 and DIRECT_MIN <= 1 + wire.ENTRY.size + plen <= link.body_limit():
                if self._too_big(link, flags, data[off:]):
                    continue
                ok = self._send_direct(link, mv, HEADROOM + off, plen, dst, flags, batcher)
            else:
                if payload is None:
                    payload = bytes(data[off:])
                ok = self._to_link(link, self.local, dst, flags, payload, batcher, wire.DEFAULT_TTL, origin=True)
            if ok:
                sent_via = hop if sent_via is None else sent_via
                self.tx_peers.add(dst if dst != wire.BROADCAST else hop, len(data) - vlen)
        if sent_via is not None:
            self.tx_flows.add(data, vlen, len(data) - vlen, now, sent_via)

    def _too_big(self, link: PeerLink, flags: int, payload: bytes | memoryview) -> bool:
        """A frame (or GSO segment) over the connection's MTU: answer ICMP, True = refused."""
        frame_off = wire.VNET_LEN if flags & wire.E_VNET else 0
        frame = memoryview(payload)[frame_off:]
        seg = fr.wire_segment_len(payload[:wire.VNET_LEN], frame) if frame_off else len(frame)
        if seg <= link.frame_capacity():
            return False
        reply = fr.too_big_reply(frame, link.mtu())
        if reply is None:
            return False              # fragmentable: the caller sends it on
        self.stats["icmp_too_big"] += 1
        self._inject(0, reply)        # the sender's stack lowers its PMTU and resends smaller
        return True

    def _frames_body_in_place(self, link: PeerLink, mv: memoryview, start: int, plen: int, dst: bytes,
                              flags: int, batcher: Batcher) -> tuple[int, int]:
        """Write a FRAMES body header (type + entry) just before the captured frame at
        ``start``; returns the body's (first, end) offsets in ``mv``. What the batcher
        held for this link leaves first, so frames keep their order."""
        for _hop, body in batcher.take(link.name):
            self._send(link, body)
        e = start - 1 - wire.ENTRY.size
        mv[e] = wire.T_FRAMES
        wire.ENTRY.pack_into(mv, e + 1, self.local, dst, flags, wire.DEFAULT_TTL, plen)
        return e, start + plen

    def _send_direct(self, link: PeerLink, mv: memoryview, start: int, plen: int, dst: bytes, flags: int,
                     batcher: Batcher) -> bool:
        """One frame alone in one datagram, built around it in the capture buffer and
        sealed in place: no copy between the packet socket and the UDP socket."""
        e, end = self._frames_body_in_place(link, mv, start, plen, dst, flags, batcher)
        if link.sealer is not None:
            dg = link.sealer.seal_inplace(mv, e, end)
        else:
            mv[e - wire.HEADER.size:e] = wire.encode_header(self.local)
            dg = mv[e - wire.HEADER.size:end]
        try:
            sent = self.usock.sendto(dg, link.addr)
        except BlockingIOError:
            self.drops.drop("udp send queue full")
            return False
        except OSError as exc:
            self._send_error(exc, link)
            return False
        link.stats["tx_pkts"] += 1
        link.stats["tx_bytes"] += sent
        return True

    def _send_pieces(self, link: PeerLink, mv: memoryview, start: int, plen: int, dst: bytes, flags: int,
                     batcher: Batcher) -> bool:
        """A frame bigger than the path as one logical datagram in pieces (wire v2).

        The FRAMES body is built around the frame in the capture buffer and, on a
        sealed link, sealed there once (one libsodium call per GSO super-frame); the
        result leaves as UDP_SEGMENT trains of ``[piece header, chunk]`` iovecs (no
        copy in Python). Measured: the big-datagram alternative spent ~40% of the
        sender's CPU in ``ip_do_fragment`` and in the bridge/netfilter hooks that
        each of its ~45 IP fragments crosses; a GSO train crosses them as one skb.
        """
        e, end = self._frames_body_in_place(link, mv, start, plen, dst, flags, batcher)
        sealed = link.sealer is not None
        gcm = sealed and link.aesgcm
        if gcm:
            seq, data = link.sealer.seal_gcm_inplace(mv, e, end)
        elif sealed:
            seq, data = link.sealer.seal_box_inplace(mv, e, end)
        else:
            seq, data = next(link.tx_seq), mv[e:end]
        total = len(data)
        head = wire.encode_piece_head(self.local, seq, total, sealed=sealed, aesgcm=gcm)
        seg = link.prober.payload
        chunk = seg - wire.PIECE.size
        per = max(1, min(GSO_MAX_SEGS, GSO_MAX_BYTES // seg))
        step = chunk * per
        pack = wire.PIECE_OFFSET.pack
        sent_any = False
        for first in range(0, total, step):
            iov: list = []
            for o in range(first, min(total, first + step), chunk):
                iov.append(head + pack(o))
                iov.append(data[o:o + chunk])
            sent = self._gso_send(link, iov, seg, "no more pieces, back to version-1 datagrams",
                                  count=len(iov) // 2)
            if sent is None or sent is GSO_REFUSED:
                continue
            link.stats["tx_pkts"] += len(iov) // 2
            link.stats["tx_bytes"] += sent
            sent_any = True
        if sent_any:
            self.stats["fragmented"] += 1
            self.stats["pieced_tx"] += 1
        return sent_any

    def _to_link(self, link: PeerLink, src: bytes, dst: bytes, flags: int, payload: bytes | memoryview,
                 batcher: Batcher, ttl: int, *, origin: bool) -> bool:
        """Queue or send one frame toward ``link``; False when it was refused (ICMP sent or dropped)."""
        limit = link.body_limit()
        if origin and self._too_big(link, flags, payload):
            return False
        if 1 + wire.ENTRY.size + len(payload) <= limit:
            for hop, body in batcher.add(link.name, wire.encode_entry(src, dst, payload, flags=flags, ttl=ttl),
                                         payload, limit):
                l2 = self.links.get(hop)
                if l2 is not None:
                    self._send(l2, body)
            return True
        self.stats["fragmented"] += 1
        fid = next(self._frag_ids if origin else self._relay_frag_ids) & 0xFFFFFFFF
        if link.sealer is None and self.udp_gso:
            self._send_frag_train(link, src, dst, flags, payload, ttl, limit, fid)
        else:
            self._send_many(link, fragment(src, dst, payload, flags, fid, limit, ttl))
        return True

    def _send_frag_train(self, link: PeerLink, src: bytes, dst: bytes, flags: int,
                         payload: bytes | memoryview, ttl: int, limit: int, fid: int) -> None:
        """Plain fragments without copying the frame: iovecs [prefix, chunk]... in UDP_SEGMENT sendmsgs
        (or one sendmsg per datagram when they are big datagrams the kernel fragments).

        Same bytes on the wire as ``batch.fragment`` (every datagram but the last is
        exactly one segment long).
        """
        chunk = limit - FRAG_BODY_OVERHEAD
        head = wire.encode_header(self.local) + TYPE_FRAMES
        total = len(payload)
        mv = memoryview(payload)
        seg = wire.HEADER.size + limit
        gso = seg <= link.prober.payload
        per = max(1, min(GSO_MAX_SEGS, GSO_MAX_BYTES // seg)) if gso else 1
        eflags = flags | wire.E_FRAG
        step = chunk * per
        for start in range(0, total, step):
            iov = []
            for off in range(start, min(total, start + step), chunk):
                n = min(chunk, total - off)
                iov.append(head + wire.ENTRY.pack(src, dst, eflags, ttl, wire.FRAG.size + n)
                           + wire.FRAG.pack(fid, off, total))
                iov.append(mv[off:off + n])
            try:
                if len(iov) == 2:
                    sent = self.usock.sendmsg(iov, [], 0, link.addr)
                else:
                    sent = self.usock.sendmsg(iov, so.gso_cmsg(seg), 0, link.addr)
            except BlockingIOError:
                self.drops.drop("udp send queue full")
                continue
            except OSError as exc:
                self._send_error(exc, link)
                continue
            link.stats["tx_pkts"] += len(iov) // 2
            link.stats["tx_bytes"] += sent

    # ---- receive: peers -> bridge ----

    def _receive_loop(self) -> None:
        s = self.usock
        buf = bytearray(65536 + 4096)
        mv = memoryview(buf)
        poller = select.poll()
        poller.register(s, select.POLLIN)
        batcher = Batcher()
        anc = socket.CMSG_SPACE(4)
        while self._running:
            n_read = 0
            self._rx_now = time.monotonic()
            self.rx_flows.maybe_age(self._rx_now)
            while n_read < DRAIN:
                try:
                    n, ancdata, _flags, addr = s.recvmsg_into([buf], anc)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        self.drops.drop("receive error", str(exc))
                    break
                n_read += 1
                seg = so.gro_size(ancdata) if self.gro else 0
                try:
                    if buf[0] == wire.PIECE_VERSION:
                        self._rx_pieces(buf, mv, 0, n, seg if 0 < seg < n else n, addr, batcher)
                    elif seg and seg < n:
                        self.stats["gro_batches"] += 1
                        for off in range(0, n, seg):
                            end = min(n, off + seg)
                            if buf[off] == wire.PIECE_VERSION:
                                self._rx_pieces(buf, mv, off, end, seg, addr, batcher)
                            elif not self._fast_fragment(buf, mv, off, end, addr):
                                self._datagram(mv[off:end], addr, batcher)
                    elif not self._fast_fragment(buf, mv, 0, n, addr):
                        self._datagram(mv[:n], addr, batcher)
                except Exception as exc:   # a bug on one datagram must not stop the sleeve
                    self.drops.drop("receive bug", repr(exc))
                    log.debug("receive bug", exc_info=True)
            self._flush(batcher)
            if n_read < DRAIN:
                poller.poll(200)

    def _fast_fragment(self, buf: bytearray, mv: memoryview, off: int, end: int, addr: tuple[str, int]) -> bool:
        """The hot path: a plain datagram holding one fragment for us. False: take the full path.

        Checks exactly what the full path would (version, flags, known unsealed
        sender at its own address, one well-formed entry) with fewer objects per datagram.
        """
        if end - off < FAST_MIN or buf[off] != wire.VERSION or buf[off + 1] or buf[off + 8] != wire.T_FRAMES:
            return False
        link = self.links.get(bytes(buf[off + 2:off + 8]))
        if link is None or link.opener is not None or link.addr[0] != addr[0]:
            return False
        src, dst, eflags, _ttl, elen = wire.ENTRY.unpack_from(buf, off + 9)
        if dst != self.local or eflags & ~wire.E_VNET != wire.E_FRAG or elen != end - off - 25:
            return False
        fid, foff, total = wire.FRAG.unpack_from(buf, off + 25)
        chunk = mv[off + 37:end]
        if total > wire.MAX_FRAME or foff + len(chunk) > total:
            return False
        now = time.monotonic()
        if not link.is_up(now):
            return False      # let the full path log the peer coming up
        link.last_rx = now
        link.stats["rx_pkts"] += 1
        link.stats["rx_bytes"] += end - off
        try:
            done = self._reasm.add(src, fid, foff, total, chunk, eflags, now)
        except wire.WireError as exc:
            self.drops.drop(exc.cause, str(exc))
            return True
        if done is not None:
            self.stats["reassembled"] += 1
            self._deliver(src, done[1], memoryview(done[0]))
        return True

    def _rx_pieces(self, buf: bytearray, mv: memoryview, p: int, n: int, seg: int, addr: tuple[str, int],
                   batcher: Batcher) -> None:
        """Pieces in ``buf[p:n]`` (a GRO batch of ``seg``-byte segments, or one datagram).

        The hot loop of the receiver: per piece one header slice, one unpack and
        one copy into the logical datagram; the per-datagram checks (sender, sealed
        or not, replay window) run once per run of pieces with the same key.
        """
        now = time.monotonic()
        add = self._pieces.add
        to = _TOTAL_OFFSET.unpack_from
        hsz = wire.PIECE.size
        last_key = b""
        link: PeerLink | None = None
        count = 0
        first = p
        while p < n:
            end = p + seg if p + seg < n else n
            try:
                if buf[p] != wire.PIECE_VERSION:      # a version-1 datagram in the same batch
                    if not self._fast_fragment(buf, mv, p, end, addr):
                        self._datagram(mv[p:end], addr, batcher)
                    p = end
                    continue
                if end - p <= hsz:
                    raise wire.WireError("truncated", f"piece of {end - p} bytes is shorter than its header")
                key = bytes(mv[p + 1:p + 16])          # flags, sender, seq
                if key != last_key:
                    link = self._piece_link(key, addr)
                    last_key = key
                total, off = to(buf, p + 16)
                if total > wire.MAX_PIECED or off + end - p - hsz > total:
                    raise wire.WireError("length", f"piece [{off}, +{end - p - hsz}) outside a datagram of "
                                                   f"{total} bytes")
                count += 1
                done = add(key, total, off, mv[p + hsz:end], now)
                if done is not None:
                    self._piece_done(link, key, done, addr, batcher)
            except wire.WireError as exc:
                self.drops.drop(exc.cause, f"from {addr[0]}: {exc}")
                last_key = b""
            p = end
        if link is not None and count:
            link.stats["rx_pkts"] += count
            link.stats["rx_bytes"] += n - first

    def _piece_link(self, key: bytes, addr: tuple[str, int]) -> PeerLink:
        """The link a run of pieces comes from, checked like a whole datagram's header."""
        flags = key[0]
        if flags & ~wire.PIECE_FLAGS or flags == wire.FLAG_AESGCM:
            raise wire.WireError("bad flags", f"unknown piece flags {flags:#x}")
        link = self.links.get(key[1:7])
        if link is None:
            raise wire.WireError("unknown sender", f"piece from {addr[0]} claims unknown peer "
                                                   f"{wire.bytes_to_name(key[1:7])}")
        _check_source(link, addr)
        if link.opener is not None:
            if not flags & wire.FLAG_SEALED:
                raise wire.WireError("unsealed", f"plain piece from {addr[0]} while a password is set")
            link.opener.check(int.from_bytes(key[7:15], "big"))    # replayed pieces stop here
        elif flags & wire.FLAG_SEALED:
            raise wire.WireError("sealed without password", f"sealed piece from {addr[0]}; no password set here")
        return link

    def _piece_done(self, link: PeerLink, key: bytes, data: bytearray, addr: tuple[str, int],
                    batcher: Batcher) -> None:
        """A logical datagram is complete: open it (sealed) and handle its body."""
        if key[0] & wire.FLAG_AESGCM:
            body = link.opener.open_gcm_box(memoryview(data), int.from_bytes(key[7:15], "big"))
        elif key[0] & wire.FLAG_SEALED:
            body = link.opener.open_box(memoryview(data), int.from_bytes(key[7:15], "big"))
        else:
            body = memoryview(data)
        self.stats["reassembled"] += 1
        self.stats["pieced_rx"] += 1
        self._body(link, body, addr, batcher)

    def _datagram(self, dg: memoryview, addr: tuple[str, int], batcher: Batcher) -> None:
        try:
            hdr = wire.decode_header(dg)
            link = self.links.get(hdr.sender)
            if link is None:
                raise wire.WireError("unknown sender", f"datagram from {addr[0]} claims unknown peer "
                                                       f"{wire.bytes_to_name(hdr.sender)}")
            _check_source(link, addr)
            if link.opener is not None:
                if not hdr.sealed:
                    raise wire.WireError("unsealed", f"plain datagram from {addr[0]} while a password is set")
                body = memoryview(link.opener.open(dg, hdr, inplace=True))
            else:
                if hdr.sealed:
                    raise wire.WireError("sealed without password", f"sealed datagram from {addr[0]}; "
                                                                    "no password set here")
                body = dg[hdr.body_offset:]
            link.stats["rx_pkts"] += 1
            link.stats["rx_bytes"] += len(dg)
            self._body(link, body, addr, batcher)
        except wire.WireError as exc:
            self.drops.drop(exc.cause, f"from {addr[0]}: {exc}")

    def _body(self, link: PeerLink, body: memoryview, addr: tuple[str, int], batcher: Batcher) -> None:
        """The authenticated body of a datagram (whole or reassembled from pieces) from ``link``."""
        t = wire.body_type(body)
        now = time.monotonic()
        if not link.is_up(now):
            link.up_since = now
            log.info("sleeve: peer %s (%s) is up", wire.bytes_to_name(link.name), addr[0])
            if self.on_peer_change:
                self.on_peer_change(link.name, True)
        link.last_rx = now
        if t == wire.T_FRAMES:
            self._frames(link, body[1:], batcher)
        elif t == wire.T_HEARTBEAT:
            ts, _pmtu = wire.decode_fixed(body[1:], wire.HB, "heartbeat")
            self._peer_version(link, *wire.heartbeat_version(body[1:]))
            self._send(link, wire.encode_heartbeat_ack(ts))
        elif t == wire.T_HEARTBEAT_ACK:
            (ts,) = wire.decode_fixed(body[1:], wire.HB_ACK, "heartbeat ack")
            rtt = (time.monotonic_ns() - ts) / 1e6
            if 0 <= rtt < 60000:
                link.rtt_ms = rtt
        elif t == wire.T_PMTU_PROBE:
            pid, size = wire.decode_fixed(body[1:], wire.PROBE, "pmtu probe")
            self._send(link, wire.encode_probe_ack(pid, len(body) + link.overhead()))
        elif t == wire.T_PMTU_ACK:
            pid, size = wire.decode_fixed(body[1:], wire.PROBE, "pmtu ack")
            link.prober.on_ack(pid, size)

    def _peer_version(self, link: PeerLink, version: int, features: int = 0) -> None:
        """Note the wire version and features a peer's heartbeat advertises; use the highest
        version both speak."""
        ours = wire.PIECE_VERSION if self.pieces else wire.VERSION
        v = max(1, min(version, ours))
        link.aesgcm = v >= 2 and self.aesgcm and bool(features & wire.FEATURE_AESGCM)
        if v == link.version and version == link.peer_version:
            return
        link.peer_version = version
        if v >= 2:
            self._set_udp_checksums(True)      # before any piece train: GSO needs checksums
            link.version = v
        else:
            link.version = v
            self._set_udp_checksums(self._checksums_needed())
        log.info("sleeve: peer %s speaks wire version %d%s", wire.bytes_to_name(link.name), version,
                 "" if v == version else f" (we use {v}: the highest this sleeve speaks is {ours})")

    def _frames(self, link: PeerLink, body: memoryview, batcher: Batcher) -> None:
        # Decode all entries first: a datagram with a bad tail delivers nothing.
        for e in list(wire.iter_entries(body)):
            if e.dst == self.local or e.dst == wire.BROADCAST:
                if e.is_frag and e.dst == self.local:
                    fid, off, total, chunk = wire.decode_frag(e.payload)
                    done = self._reasm.add(e.src, fid, off, total, chunk, e.flags)
                    if done is None:
                        continue
                    self.stats["reassembled"] += 1
                    data, flags = done
                    self._deliver(e.src, flags, memoryview(data))
                elif not e.is_frag:
                    self._deliver(e.src, e.flags, e.payload)
                else:   # fragmented broadcast: deliver whole, relay pieces as they are
                    fid, off, total, chunk = wire.decode_frag(e.payload)
                    done = self._reasm.add(e.src, fid, off, total, chunk, e.flags)
                    if done is not None:
                        self._deliver(e.src, done[1], memoryview(done[0]))
                if e.dst == wire.BROADCAST:
                    for hop in self.broadcast.get(e.src, ()):
                        if hop != link.name:
                            self._relay(e, hop, batcher)
            else:
                hop = self.unicast.get(e.dst)
                if hop is None:
                    self.drops.drop("unknown destination peer", wire.bytes_to_name(e.dst))
                elif hop == link.name:
                    self.drops.drop("routing loop", wire.bytes_to_name(e.dst))
                else:
                    self._relay(e, hop, batcher)

    def _relay(self, e: wire.Entry, hop: bytes, batcher: Batcher) -> None:
        if e.ttl <= 1:
            self.drops.drop("ttl exceeded", wire.bytes_to_name(e.dst))
            return
        link = self.links.get(hop)
        if link is None:
            self.drops.drop("next hop has no sleeve", wire.bytes_to_name(hop))
            return
        self.stats["relayed"] += 1
        if e.is_frag:
            limit = link.body_limit()
            pieces = [e.payload]
            if 1 + wire.ENTRY.size + len(e.payload) > limit:
                # Split the fragment further (same id and total, shifted offsets): the
                # next hop's datagrams are smaller than the ones it came in.
                fid, off, total, chunk = wire.decode_frag(e.payload)
                step = limit - FRAG_BODY_OVERHEAD
                pieces = [wire.FRAG.pack(fid, off + o, total) + bytes(chunk[o:o + step])
                          for o in range(0, len(chunk), step)]
            for piece in pieces:
                for h, body in batcher.add(hop, wire.encode_entry(e.src, e.dst, piece, flags=e.flags,
                                                                  ttl=e.ttl - 1), piece, limit):
                    l2 = self.links.get(h)
                    if l2 is not None:
                        self._send(l2, body)
            return
        self._to_link(link, e.src, e.dst, e.flags, bytes(e.payload), batcher, e.ttl - 1, origin=False)

    def _deliver(self, src_peer: bytes, flags: int, payload: memoryview) -> None:
        off = wire.VNET_LEN if flags & wire.E_VNET else 0
        if len(payload) < off + 14:
            self.drops.drop("runt", "frame shorter than an Ethernet header")
            return
        src_mac = bytes(payload[off + 6:off + 12])
        if not src_mac[0] & 1:
            cur = self.macs.get(src_mac)
            if cur is None or cur[0] != src_peer:
                self.macs[src_mac] = (src_peer, time.monotonic())
        if self._inject(None if off else 0, payload):
            n = len(payload) - off
            self.rx_flows.add(payload, off, n, self._rx_now, src_peer)
            self.rx_peers.add(src_peer, n)

    def _inject(self, vnet: int | None, payload: bytes | memoryview) -> bool:
        """Write a frame to the bridge port; ``vnet`` 0 prepends an empty vnet header."""
        try:
            if self.vnet and vnet == 0:
                self.psock.sendmsg([fr.VNET_ZERO, payload])
            else:
                self.psock.send(payload)
        except BlockingIOError:
            self.drops.drop("inject queue full")
            return False
        except OSError as exc:
            self.drops.drop(f"inject error {errno.errorcode.get(exc.errno, exc.errno)}", str(exc))
            return False
        self.stats["injected"] += 1
        return True

    # ---- timer ----

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
                    wire.FEATURE_AESGCM if self.aesgcm and self.pieces else 0))
                for pid, size, df in link.prober.due(now):
                    body = wire.encode_probe(pid, size, link.overhead())
                    self._send(link, body, self.probe_sock if df else None)
                if link.prober.lost and not link.prober.lost_reported and link.is_up(now):
                    link.prober.lost_reported = True
                    self.drops.drop("pmtu probes unanswered", wire.bytes_to_name(link.name))
            self._reasm.expire(now)
            self._pieces.expire(now)
            if self._reasm.expired or self._pieces.expired:
                self.drops.counts["reassembly timeout"] = self._reasm.expired + self._pieces.expired
            stale = [m for m, (_, t) in self.macs.items() if now - t > MAC_TIMEOUT]
            for m in stale:
                self.macs.pop(m, None)
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
            "cipher": None if link.sealer is None else ("aes256gcm" if link.aesgcm else "xsalsa20poly1305"),
            "rtt_ms": None if link.rtt_ms is None else round(link.rtt_ms, 3), **link.stats,
        }

    def status(self) -> dict:
        return {
            "local": wire.bytes_to_name(self.local), "port": self.port, "vnet": self.vnet, "gro": self.gro,
            "udp_gso": self.udp_gso,
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
