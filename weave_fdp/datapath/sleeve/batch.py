"""Batching frames into datagram bodies, fragmenting big frames, reassembling them.

Pure logic. A "limit" is the largest body (type byte + entries) that fits one
datagram on the path to a next hop: path MTU payload minus header and sealing.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from itertools import accumulate
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.drops import SleeveDrop

TYPE_FRAMES = bytes([wire.T_FRAMES])
FRAG_BODY_OVERHEAD = 1 + wire.ENTRY.size + wire.FRAG.size


@dataclass
class _Open:
    parts: list = field(default_factory=lambda: [TYPE_FRAMES])
    size: int = 1


class Batcher:
    """Packs entries per next hop into bodies no larger than each hop's limit.

    ``add`` returns the bodies that became full; ``drain`` returns the rest (call
    it when the capture queue is empty, so batching adds no latency).
    """

    def __init__(self) -> None:
        self._open: dict[Hashable, _Open] = {}

    def add(self, hop: Hashable, entry_header: bytes, payload: bytes | memoryview,
            limit: int) -> list[tuple[Hashable, bytes]]:
        need = len(entry_header) + len(payload)
        if 1 + need > limit:
            raise ValueError(f"entry of {need} bytes does not fit a body of {limit}; fragment it")
        done = []
        cur = self._open.get(hop)
        if cur is not None and cur.size + need > limit:
            done.append((hop, b"".join(cur.parts)))
            cur = None
        if cur is None:
            cur = self._open[hop] = _Open()
        cur.parts.append(entry_header)
        cur.parts.append(payload)
        cur.size += need
        return done

    def take(self, hop: Hashable) -> list[tuple[Hashable, bytes]]:
        """The open body of ``hop`` (if any), closed now: send it before a frame that
        bypasses the batcher, so frames to one hop keep their order."""
        o = self._open.pop(hop, None) if self._open else None
        return [(hop, b"".join(o.parts))] if o is not None and o.size > 1 else []

    def drain(self) -> list[tuple[Hashable, bytes]]:
        out = [(hop, b"".join(o.parts)) for hop, o in self._open.items() if o.size > 1]
        self._open.clear()
        return out


def fragment(src: bytes, dst: bytes, frame: bytes | memoryview, flags: int, frag_id: int,
             limit: int, ttl: int = wire.DEFAULT_TTL) -> list[bytes]:
    """Split ``frame`` into FRAMES bodies of one fragment entry each.

    Every body but the last is exactly ``limit`` bytes, so the datagrams can go out
    in one ``sendmsg`` with UDP_SEGMENT (the kernel requires equal segments).
    """
    chunk = limit - FRAG_BODY_OVERHEAD
    if chunk < 64:
        raise ValueError(f"body limit {limit} too small to fragment")
    total = len(frame)
    mv = memoryview(frame)
    bodies = []
    for off in range(0, total, chunk):
        piece = mv[off:off + chunk]
        bodies.append(b"".join((
            TYPE_FRAMES,
            wire.ENTRY.pack(src, dst, flags | wire.E_FRAG, ttl, wire.FRAG.size + len(piece)),
            wire.FRAG.pack(frag_id & 0xFFFFFFFF, off, total),
            piece,
        )))
    return bodies


@dataclass
class _Partial:
    buf: bytearray
    offsets: set
    got: int
    started: float
    flags: int


class _Bounded:
    """Partials held for at most ``timeout`` seconds, at most ``max_partial`` of them
    (the oldest goes first when full), so garbage cannot exhaust memory."""

    def __init__(self, timeout: float, max_partial: int) -> None:
        self.timeout = timeout
        self.max_partial = max_partial
        self._partial: dict = {}
        self.expired = 0

    @staticmethod
    def _started(p: Any) -> float:
        raise NotImplementedError

    def _make_room(self, now: float) -> None:
        """Before a new partial: expire old ones, else evict the oldest."""
        if len(self._partial) >= self.max_partial:
            self.expire(now)
            if len(self._partial) >= self.max_partial:
                self._partial.pop(next(iter(self._partial)))
                self.expired += 1

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        old = [k for k, p in self._partial.items() if now - self._started(p) > self.timeout]
        for k in old:
            del self._partial[k]
        self.expired += len(old)
        return len(old)

    def __len__(self) -> int:
        return len(self._partial)


class Reassembler(_Bounded):
    """Rebuilds fragmented frames; keyed by (source peer, fragment id).

    Incomplete frames expire after ``timeout`` seconds; at most ``max_partial`` are
    held (the oldest is dropped first), so garbage cannot exhaust memory.
    """

    def __init__(self, timeout: float = 2.0, max_partial: int = 256) -> None:
        super().__init__(timeout, max_partial)

    @staticmethod
    def _started(p: Any) -> float:
        return p.started

    def add(self, src: bytes, fid: int, offset: int, total: int, chunk: memoryview,
            flags: int, now: float | None = None) -> tuple[bytes, int] | None:
        """Store a fragment; returns (frame, entry flags) once complete."""
        now = time.monotonic() if now is None else now
        key = (src, fid)
        p = self._partial.get(key)
        if p is None:
            self._make_room(now)
            p = self._partial[key] = _Partial(bytearray(total), set(), 0, now, flags & ~wire.E_FRAG)
        elif len(p.buf) != total:
            raise wire.WireError(SleeveDrop.BAD_FRAGMENT,
                                 f"fragment {fid} from {wire.bytes_to_name(src)} changed its total")
        if offset in p.offsets:
            return None
        p.offsets.add(offset)
        p.buf[offset:offset + len(chunk)] = chunk
        p.got += len(chunk)
        if p.got < total:
            return None
        del self._partial[key]
        if p.got != total:
            raise wire.WireError(SleeveDrop.BAD_FRAGMENT, f"fragments of {fid} overlap")
        return p.buf, p.flags   # no copy: the caller only reads it



class PieceAssembler(_Bounded):
    """Rebuilds logical datagrams from version-2 pieces; keyed by the bytes of
    (flags, sender, seq) as they stand in the piece header.

    Lean on purpose (it runs once per ~1.4 KB piece): a partial is
    ``[buffer, offsets seen, bytes got, started]``. Duplicate offsets are ignored.
    Pieces are not authenticated one by one: a sealed datagram that was
    reassembled from forged or mixed pieces fails authentication as a whole.
    Bounded like ``Reassembler``: ``timeout`` seconds, ``max_partial`` partials.
    """

    def __init__(self, timeout: float = 1.0, max_partial: int = 64) -> None:
        super().__init__(timeout, max_partial)
        self.duplicates = 0

    def add(self, key: bytes, total: int, offset: int, chunk: memoryview, now: float) -> bytearray | None:
        """Store one piece (the caller checked ``offset + len(chunk) <= total``);
        the whole logical datagram once every byte arrived."""
        p = self._partial.get(key)
        if p is None:
            self._make_room(now)
            p = self._partial[key] = [bytearray(total), set(), 0, now]
        elif len(p[0]) != total:
            raise wire.WireError(SleeveDrop.BAD_FRAGMENT, "pieces of one datagram disagree on its length")
        if offset in p[1]:
            self.duplicates += 1
            return None
        p[1].add(offset)
        n = len(chunk)
        p[0][offset:offset + n] = chunk
        p[2] += n
        if p[2] < total:
            return None
        del self._partial[key]
        return p[0]

    def add_run(self, key: bytes, total: int, offset: int, chunks: list, now: float) -> bytearray | None:
        """Store a run of consecutive chunks starting at ``offset`` (the caller checked that
        they end within ``total``), as ``add`` would one by one (each chunk's offset is
        remembered, so a duplicate piece is ignored), with as few copies as it can: a run
        that is the whole datagram is joined and returned at once (nothing stored); the
        first run of a datagram is joined into the buffer of its partial (one copy)."""
        lens = list(map(len, chunks))
        got = sum(lens)
        if offset == 0 and got == total:
            return bytearray().join(chunks)
        offsets = list(accumulate(lens[:-1], initial=offset))
        p = self._partial.get(key)
        if p is None:
            self._make_room(now)
            if offset == 0:
                buf = bytearray().join(chunks + [bytes(total - got)])
            else:
                buf = bytearray(total)
                buf[offset:offset + got] = bytearray().join(chunks)
            self._partial[key] = [buf, set(offsets), got, now]
            return None
        if len(p[0]) != total:
            raise wire.WireError(SleeveDrop.BAD_FRAGMENT, "pieces of one datagram disagree on its length")
        for o, c in zip(offsets, chunks):
            if o in p[1]:
                self.duplicates += 1
                continue
            p[1].add(o)
            p[0][o:o + len(c)] = c
            p[2] += len(c)
        if p[2] < total:
            return None
        del self._partial[key]
        return p[0]

    @staticmethod
    def _started(p: Any) -> float:
        return p[3]
