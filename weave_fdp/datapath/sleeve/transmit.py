"""The sleeve's transmit side: frames captured on the bridge port, to peers over UDP.

The data thread (``_serve``, shared with the receive side) reads frames (GSO super-frames
with their virtio_net_hdr, up to 64 KiB) with ``recv`` (a receive ring, ``sockets.CaptureRing``,
is written but off: ``SleeveState.capture_ring``), sends the steady case by ``_one_hop``, asks
``decide.route_captured`` where any other goes, and sends it one of four ways:

- batched: small frames to one next hop share a datagram (``Batcher``), flushed when
  a read burst ends, so batching adds no latency;
- direct: a big frame that fits one datagram is framed (and sealed) where it was
  captured and sent alone, no copy;
- pieces (wire v2): a frame bigger than the path leaves as one logical datagram,
  sealed once, cut into a UDP GSO train of pieces;
- fragments (wire v1): the same as v1 fragment entries, a GSO train on plain links.

Every datagram leaves through ``SleeveState._sendmsg``.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from weave_fdp.datapath.sleeve import frames as fr
from weave_fdp.datapath.sleeve import sockets as so
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.batch import FRAG_BODY_OVERHEAD, TYPE_FRAMES, Batcher, fragment
from weave_fdp.datapath.sleeve.decide import route_captured
from weave_fdp.datapath.sleeve.flows import flow_key
from weave_fdp.datapath.sleeve.link import PeerLink
from weave_fdp.datapath.sleeve.sizing import one_train_frame, segments_per_train
from weave_fdp.datapath.sleeve.state import GSO_REFUSED, SleeveState, log
from weave_fdp.datapath.sleeve.views import StridedViews
from weave_fdp.datapath.sleeve.drops import SleeveDrop

DRAIN = 64                   # items read from one source per round before the next source's turn
HEADROOM = 64                # bytes before a captured frame: room to build its datagram in place
TAILROOM = 16                # bytes after it: the AES-256-GCM tag of a frame sealed in place
CAPTURE_MAX = wire.MAX_FRAME  # largest captured frame (vnet header + GSO super-frame, BIG TCP's too)
DIRECT_MIN = 8192            # frames at least this big bypass the batcher (sent alone, no copy)
SEAL_MAC = 16                # a secretbox's MAC, before its ciphertext


class Source(NamedTuple):
    """One thing the data thread reads from, and what it does with what it reads."""

    fileno: int                                   # polled when a round read nothing
    wake: Callable[[], bool]                      # once per round; False: leave (the port was reopened)
    read: Callable[[int], Any]                    # read(MSG_DONTWAIT): an item, or None when there is none
    handle: Callable[[Any, Batcher], None]
    bug: SleeveDrop                               # what an exception in ``handle`` is counted as


class Transmit(SleeveState):
    """Capture loop and the send paths (frames toward peers)."""

    # ---- capture: bridge -> peers ----

    def _serve(self, sources: list[Source]) -> None:
        """The loop of the data thread, over every source in turn (the capture port and the
        UDP socket). Each round, per source: ``wake()`` (False: leave, the caller starts
        again), then up to DRAIN ``read(MSG_DONTWAIT)``s (None: nothing more now), each
        handled (a bug on one never stops the loop: counted as the source's ``bug``); then
        what the round batched leaves; a round that read nothing waits in ``poll`` on all
        of them (at most ``sockets.WAIT_S``).

        One thread for both directions, not one per source: a host's data and the ACKs
        coming back would otherwise hand the GIL to each other on every frame (a futex
        wake-up each, an IPI on a VM). Measured (docs/SLEEVE.md): 1.03-1.06x plain and
        1.15-1.16x encrypted throughput, 10-17% less CPU and half the context switches
        per GB."""
        batcher = Batcher()
        dontwait = socket.MSG_DONTWAIT
        poller = select.poll()
        for src in sources:
            poller.register(src.fileno, select.POLLIN | select.POLLERR)
        wait_ms = int(so.WAIT_S * 1000)
        while self._running:
            got = 0
            for src in sources:
                if not src.wake():
                    return
                read, handle = src.read, src.handle
                n = 0
                while n < DRAIN:
                    item = read(dontwait)
                    if item is None:
                        break
                    n += 1
                    try:
                        handle(item, batcher)
                    except Exception as exc:
                        bug = src.bug
                        self.drops.drop(bug, repr(exc))
                        log.debug("%s", bug.value, exc_info=True)
                got += n
            self._flush(batcher)
            if not got:
                poller.poll(wait_ms)

    def _capture_source(self) -> Source:
        """Frames from the bridge port: from a receive ring where the kernel gives one
        (``_ring_source``), else with ``recv`` into a buffer with room around the frame."""
        s = self.psock
        ring = so.CaptureRing.open(s, HEADROOM, TAILROOM) if self.capture_ring else None
        if ring is not None:
            self.capture_mode = "ring"
            return self._ring_source(s, ring)
        if self.capture_ring:
            self.capture_ring = False
            log.info("sleeve: no receive ring on %s here; capturing with recv", self.ifname)
        self.capture_mode = "recv"
        buf = bytearray(HEADROOM + CAPTURE_MAX + TAILROOM)
        mv = memoryview(buf)
        rmv = mv[HEADROOM:HEADROOM + CAPTURE_MAX]       # the tailroom stays free for an AES-GCM tag
        self._views = StridedViews(mv, CAPTURE_MAX + TAILROOM)
        vlen = wire.VNET_LEN if self.vnet else 0
        now = 0.0

        def wake() -> bool:
            nonlocal now
            if s is not self.psock:      # reopen_port() swapped the socket: restart on the new one
                s.close()
                return False
            now = time.monotonic()
            self.tx_flows.maybe_age(now)
            return True

        def read(flags: int) -> int | None:
            try:
                return s.recv_into(rmv, 0, flags)
            except BlockingIOError:
                return None
            except OSError as exc:
                self.drops.drop(SleeveDrop.CAPTURE_ERROR, str(exc))
                return None

        def handle(n: int, batcher: Batcher) -> None:
            if n >= vlen + 14:
                self.stats["captured"] += 1
                self._outbound(mv, n, vlen, batcher, now)

        return Source(s.fileno(), wake, read, handle, SleeveDrop.CAPTURE_BUG)

    def _ring_source(self, s: socket.socket, ring: so.CaptureRing) -> Source:
        """Frames from a receive ring (``sockets.CaptureRing``): each handled where the kernel
        put it, ``HEADROOM`` bytes of its slot before it and ``TAILROOM`` after, exactly as
        in the ``recv`` buffer, and its slot handed back once it left."""
        vlen = wire.VNET_LEN if self.vnet else 0
        view = ring.view
        self._views = StridedViews(view, CAPTURE_MAX + TAILROOM)
        now = 0.0

        def wake() -> bool:
            nonlocal now
            if s is not self.psock:      # reopen_port() swapped the socket: restart on the new one
                self._views.release()
                ring.close()
                s.close()
                return False
            now = time.monotonic()
            self.tx_flows.maybe_age(now)
            return True

        def handle(base: int, batcher: Batcher) -> None:
            try:
                where = ring.frame(base, vlen)
                if where is None:
                    self.drops.drop(SleeveDrop.CAPTURE_ERROR, "frame bigger than a ring slot")
                    return
                start, n = where
                if n >= vlen + 14:
                    self.stats["captured"] += 1
                    self._outbound(view, n, vlen, batcher, now, start)
            finally:
                ring.release(base)

        return Source(s.fileno(), wake, lambda _flags: ring.next(), handle, SleeveDrop.CAPTURE_BUG)

    def _flush(self, batcher: Batcher) -> None:
        """Send what one read burst batched, one datagram per next hop and batch."""
        for hop, body in batcher.drain():
            link = self.links.get(hop)
            if link is not None:
                self._send(link, body)

    def _outbound(self, mv: memoryview, n: int, vlen: int, batcher: Batcher, now: float,
                  base: int = HEADROOM) -> None:
        """Route one captured frame: ``mv[base:base + n]`` = vnet header + Ethernet frame, with
        ``HEADROOM`` writable bytes before it and ``TAILROOM`` after.

        The steady case, a learned unicast MAC whose peer is one sleeve link away, is
        looked up in a cache by destination MAC (valid while ``route_gen`` holds) and sent
        by ``_one_hop``; anything else is routed by ``decide.route_captured``.
        """
        gen = self.route_gen                     # read before the tables: a change after this
        if gen != self._hops_gen:                # bumps it again and empties the cache next frame
            self._hops_gen = gen
            self._hops = {}
        d = base + vlen
        mac = mv[d:d + 6].tobytes()
        hop = self._hops.get(mac)
        if hop is None:
            self._routed(mac, mv, n, vlen, batcher, now, base)
        elif not self._one_hop(hop[0], hop[1], mv, n, vlen, batcher, now, base):
            self._send_hops(hop[0], (hop[1].name,), {hop[1].name: hop[1]}, mv, n, vlen, batcher, now, base)

    def _routed(self, mac: bytes, mv: memoryview, n: int, vlen: int, batcher: Batcher, now: float,
                base: int) -> None:
        links = self.links
        v = route_captured(mac, self.local, self.macs, self.unicast, self.broadcast, links, self.local_bcast_to)
        for reason, peer in v.drops:
            self.drops.drop(reason, wire.bytes_to_name(peer))
        if len(v.hops) == 1 and not v.drops and v.dst != wire.BROADCAST:
            link = links[v.hops[0]]
            self._hops[mac] = (v.dst, link)
            if self._one_hop(v.dst, link, mv, n, vlen, batcher, now, base):
                return
        self._send_hops(v.dst, v.hops, links, mv, n, vlen, batcher, now, base)

    def _one_hop(self, dst: bytes, link: PeerLink, mv: memoryview, n: int, vlen: int, batcher: Batcher,
                 now: float, base: int) -> bool:
        """The steady case in as few steps as it takes: a frame to peer ``dst`` over its only
        hop ``link``, when it is a super-frame bigger than the path (pieces) or a small frame
        (batched) that no ICMP "too big" can concern. False: nothing done, the general path
        (``_send_hops``) takes it. Sends the same bytes and counts the same as that path."""
        if vlen and mv[base:base + vlen] != fr.VNET_ZERO:
            flags, off = wire.E_VNET, 0
        else:
            flags, off = 0, vlen                  # an all-zero vnet header is dropped
        plen = n - off
        size = 1 + wire.ENTRY.size + plen
        path = link.path_limit()
        if size > path:
            if link.version < 2 or not self.udp_gso or not self.pieces \
                    or plen > wire.ENTRY_MAX and not (link.takes_big and dst == link.name):
                return False
            fkey = flow_key(mv, base + vlen)      # before sealing in place
            if self._too_big(link, flags, mv[base + off:base + n]) \
                    or not self._send_pieces(link, mv, base + off, plen, dst, flags, batcher):
                return True
        elif size + wire.VNET_LEN <= path and size < DIRECT_MIN:    # under every MTU check
            payload = mv[base + off:base + n].tobytes()
            fkey = flow_key(payload, vlen - off)
            for hop, body in batcher.add(link.name, wire.ENTRY.pack(self.local, dst, flags, wire.DEFAULT_TTL, plen),
                                         payload, link.body_limit()):
                l2 = self.links.get(hop)
                if l2 is not None:
                    self._send(l2, body)
        else:
            return False
        self.tx_peers.add(dst, n - vlen)
        self.tx_flows.add_key(fkey, n - vlen, now, link.name)
        return True

    def _send_hops(self, dst: bytes, hops: tuple[bytes, ...], links: dict[bytes, PeerLink], mv: memoryview,
                   n: int, vlen: int, batcher: Batcher, now: float, base: int) -> None:
        """The general path: one captured frame to each of ``hops`` (a flood, a frame sent
        alone or in fragments), with ICMP "too big" where it is over the connection's MTU."""
        data = mv[base:base + n]
        fkey = flow_key(data, vlen)     # now: the sealed paths below encrypt the frame where it lies
        flags = wire.E_VNET if vlen and data[:vlen] != fr.VNET_ZERO else 0
        off = 0 if flags else vlen                       # an all-zero vnet header is dropped
        plen = n - off
        payload: bytes | None = None
        sent_via = None
        for hop in hops:
            link = links[hop]
            if plen > wire.ENTRY_MAX and not (len(hops) == 1 and dst == hop and link.takes_big):
                # over 64 KiB for a peer that takes none (or through a relay that cannot say
                # whether the destination does): as smaller super-frames, each sent as any other
                for buf, k in self._cut(link, data):
                    self._send_hops(dst, (hop,), links, memoryview(buf), k, vlen, batcher, now, HEADROOM)
                continue
            if len(hops) == 1 and link.version >= 2 and self.udp_gso and self.pieces \
                    and 1 + wire.ENTRY.size + plen > link.path_limit():
                if self._too_big(link, flags, data[off:]):
                    continue
                ok = self._send_pieces(link, mv, base + off, plen, dst, flags, batcher)
            elif len(hops) == 1 and DIRECT_MIN <= 1 + wire.ENTRY.size + plen <= link.body_limit():
                if self._too_big(link, flags, data[off:]):
                    continue
                ok = self._send_direct(link, mv, base + off, plen, dst, flags, batcher)
            else:
                if payload is None:
                    payload = bytes(data[off:])
                ok = self._to_link(link, self.local, dst, flags, payload, batcher, wire.DEFAULT_TTL, origin=True)
            if ok:
                sent_via = hop if sent_via is None else sent_via
                self.tx_peers.add(dst if dst != wire.BROADCAST else hop, n - vlen)
        if sent_via is not None:
            self.tx_flows.add_key(fkey, n - vlen, now, sent_via)

    def _too_big(self, link: PeerLink, flags: int, payload: bytes | memoryview) -> bool:
        """A frame (or GSO segment) over the connection's MTU: answer ICMP, True = refused."""
        frame_off = wire.VNET_LEN if flags & wire.E_VNET else 0
        capacity = link.frame_capacity()
        if len(payload) - frame_off <= capacity:
            return False              # small frames (ACKs): no segment to work out
        frame = memoryview(payload)[frame_off:]
        seg = fr.wire_segment_len(payload[:wire.VNET_LEN], frame) if frame_off else len(frame)
        if seg <= capacity:
            return False
        reply = fr.too_big_reply(frame, link.mtu())
        if reply is None:
            return False              # fragmentable: the caller sends it on
        self.stats["icmp_too_big"] += 1
        self._inject(0, reply)        # the sender's stack lowers its PMTU and resends smaller
        return True

    # ---- the send paths ----

    def _frames_body_in_place(self, link: PeerLink, mv: memoryview, start: int, plen: int, dst: bytes,
                              flags: int, batcher: Batcher) -> tuple[int, int]:
        """Write a FRAMES body header (type + entry) just before the captured frame at
        ``start``; returns the body's (first, end) offsets in ``mv``. What the batcher
        held for this link leaves first, so frames keep their order."""
        for _hop, body in batcher.take(link.name):
            self._send(link, body)
        e = start - 1 - wire.ENTRY.size
        mv[e] = wire.T_FRAMES
        if plen > wire.ENTRY_MAX:
            flags |= wire.E_BIG              # the frame runs to the end; len holds its low 16 bits
            self.stats["big_tx"] += 1
        wire.ENTRY.pack_into(mv, e + 1, self.local, dst, flags, wire.DEFAULT_TTL, plen & 0xFFFF)
        return e, start + plen

    def _send_direct(self, link: PeerLink, mv: memoryview, start: int, plen: int, dst: bytes, flags: int,
                     batcher: Batcher) -> bool:
        """One frame alone in one datagram, built around it in the capture buffer and
        sealed in place: no copy between the packet socket and the UDP socket."""
        e, end = self._frames_body_in_place(link, mv, start, plen, dst, flags, batcher)
        if link.sealer is not None:
            dg = link.sealer.seal_inplace(mv, e, end)
        else:
            mv[e - wire.HEADER.size:e] = self.header
            dg = mv[e - wire.HEADER.size:end]
        return self._sendmsg(link, [dg]) is not None

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
            at = e
        elif sealed:
            seq, data = link.sealer.seal_box_inplace(mv, e, end)
            at = e - SEAL_MAC
        else:
            seq, data = next(link.tx_seq), mv[e:end]
            at = e
        total = len(data)
        head = wire.PIECE_HEAD.pack(wire.PIECE_VERSION, wire.PIECE_FLAGS_OF[sealed, gcm], self.local, seq, total)
        seg = link.prober.payload
        chunk = seg - wire.PIECE.size
        step = chunk * segments_per_train(seg)
        views = self._views if self._views is not None and self._views.mv is mv else None
        sent_any = False
        for first in range(0, total, step):
            last = min(total, first + step)
            k = -(-(last - first) // chunk)
            # per piece [the header's 20 shared bytes, its offset field, its chunk]: the first two
            # from lists (no bytes built per piece), the chunks as views into the capture buffer
            # (made once per layout: StridedViews)
            iov: list = [head] * (3 * k)
            iov[1::3] = wire.piece_offsets(first, chunk, k)
            if views is not None:
                full = (last - first) // chunk
                chunks = views.get(at + first, chunk, 0, full)
                if full < k:
                    chunks.append(data[first + full * chunk:last])
                iov[2::3] = chunks
            else:
                iov[2::3] = [data[o:o + chunk] for o in range(first, last, chunk)]
            sent = self._sendmsg(link, iov, segments=k, seg=seg)
            sent_any = sent_any or (sent is not None and sent is not GSO_REFUSED)
            self.stats["piece_trains"] += 1
        if sent_any:
            self.stats["fragmented"] += 1
            self.stats["pieced_tx"] += 1
        return sent_any

    def _to_link(self, link: PeerLink, src: bytes, dst: bytes, flags: int, payload: bytes | memoryview,
                 batcher: Batcher, ttl: int, *, origin: bool) -> bool:
        """Queue or send one frame toward ``link``; False when it was refused (ICMP sent or dropped)."""
        flags &= ~wire.E_BIG                 # entries here state their length, or are fragments
        if len(payload) > wire.ENTRY_MAX and flags & wire.E_VNET:
            # a relayed frame over 64 KiB: the next hop's reach is unknown here, so smaller ones
            cut = self._cut(link, payload)
            for buf, k in cut:
                self._to_link(link, src, dst, flags, memoryview(buf)[HEADROOM:HEADROOM + k], batcher, ttl,
                              origin=origin)
            return bool(cut)
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

    def _cut(self, link: PeerLink, frame: bytes | memoryview) -> list[tuple[bytearray, int]]:
        """A frame over 64 KiB (vnet header first) as the smaller super-frames ``link`` takes
        (``frames.split_tcp_super_frame``: each a train's worth, as the kernel's own GSO
        would cut it), each ``(buffer, length)`` with ``HEADROOM`` before it and ``TAILROOM``
        after. Empty (dropped, counted): not an IPv4/TCP super-frame that can be cut."""
        mv = memoryview(frame)
        parts = fr.split_tcp_super_frame(mv[:wire.VNET_LEN], mv[wire.VNET_LEN:], one_train_frame(link.prober.payload))
        if not parts:
            self.drops.drop(SleeveDrop.BIG_UNSPLIT, wire.bytes_to_name(link.name))
            return []
        self.stats["cut_big"] += 1
        out = []
        for vnet, head, payload in parts:
            k = len(vnet) + len(head) + len(payload)
            buf = bytearray(HEADROOM + k + TAILROOM)
            a = HEADROOM + len(vnet) + len(head)
            buf[HEADROOM:a] = vnet + head
            buf[a:a + len(payload)] = payload
            out.append((buf, k))
        return out

    def _send_frag_train(self, link: PeerLink, src: bytes, dst: bytes, flags: int,
                         payload: bytes | memoryview, ttl: int, limit: int, fid: int) -> None:
        """Plain fragments without copying the frame: iovecs [prefix, chunk]... in UDP_SEGMENT sendmsgs
        (or one sendmsg per datagram when they are big datagrams the kernel fragments).

        Same bytes on the wire as ``batch.fragment`` (every datagram but the last is
        exactly one segment long).
        """
        chunk = limit - FRAG_BODY_OVERHEAD
        head = self.header + TYPE_FRAMES
        total = len(payload)
        mv = memoryview(payload)
        seg = wire.HEADER.size + limit
        per = segments_per_train(seg) if seg <= link.prober.payload else 1
        eflags = flags | wire.E_FRAG
        step = chunk * per
        for start in range(0, total, step):
            iov = []
            for off in range(start, min(total, start + step), chunk):
                n = min(chunk, total - off)
                iov.append(head + wire.ENTRY.pack(src, dst, eflags, ttl, wire.FRAG.size + n)
                           + wire.FRAG.pack(fid, off, total))
                iov.append(mv[off:off + n])
            if self._sendmsg(link, iov, segments=len(iov) // 2, seg=seg) is GSO_REFUSED:
                for i in range(0, len(iov), 2):
                    self._sendmsg(link, iov[i:i + 2])

    def _send_many(self, link: PeerLink, bodies: list[bytes]) -> None:
        """Datagrams of equal size (all but the last): one UDP_SEGMENT sendmsg per 64 KiB
        when the segments fit the path unfragmented (the kernel's GSO needs that)."""
        datas = [b"".join(self._parts(link, b)) for b in bodies]
        seg = len(datas[0])
        per = segments_per_train(seg)
        if not self.udp_gso or len(datas) == 1 or seg > link.prober.payload:
            per = 1
        for i in range(0, len(datas), per):
            group = datas[i:i + per]
            if self._sendmsg(link, group, segments=len(group), seg=seg) is GSO_REFUSED:
                for d in group:
                    self._sendmsg(link, [d])
