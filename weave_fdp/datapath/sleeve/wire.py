"""Sleeve wire format, version 1 (UDP 6783). Pure codec: no sockets, no kernel.

Every datagram starts with a clear 8-byte header::

    0      1      2 ............ 7
    +------+------+----------------+
    | ver  | flags| sender name(6) |      ver = 1; flags bit0 = SEALED
    +------+------+----------------+

Unsealed: the body follows. Sealed: an 8-byte big-endian sequence number, then
``crypto_secretbox(body)`` (16-byte MAC + ciphertext) keyed per direction
(see ``crypto.py``). The body is one type byte and its payload::

    FRAMES (1)      entries until the end: src(6) dst(6) eflags(1) ttl(1) len(2) payload(len)
                    eflags bit0 VNET: the frame starts with a 10-byte virtio_net_hdr
                    eflags bit1 FRAG: payload = frag id(4) offset(4) total(4) + a chunk of
                                      the whole frame (vnet header included) at offset
                    eflags bit2 BIG: the frame is over 65,535 bytes (an IPv4 "BIG TCP"
                                      super-frame) and runs to the end of the body;
                                      len holds its low 16 bits (a check). Only as the
                                      one entry of a logical datagram in pieces, only
                                      toward a peer whose heartbeats set ``FEATURE_BIG``
    HEARTBEAT (2)   timestamp ns(8) sender's PMTU view(2)
    HEARTBEAT_ACK(3) echoed timestamp(8)
    PMTU_PROBE (4)  probe id(4) size(2), zero padding up to size bytes of UDP payload
    PMTU_ACK (5)    probe id(4) size(2)

Version 2 adds one datagram kind, the PIECE (see ``PIECE``), used only toward a
peer whose heartbeats say it speaks version 2 (heartbeats carry the sender's
highest version as an extra trailing byte, which version-1 decoders ignore)::

    0      1      2 ........ 7  8 ......... 15  16 ..... 19  20 ..... 23
    +------+------+------------+---------------+------------+------------+
    | ver=2| flags| sender(6)  | seq(8)        | total(4)   | offset(4)  |  chunk ...
    +------+------+------------+---------------+------------+------------+

A logical datagram of ``total`` bytes cut into chunks, sent as one UDP GSO train
(every piece but the last the same size). Sealed (flags bit0): the logical
datagram is ``crypto_secretbox(body)`` (MAC + ciphertext) under nonce ``seq``, the
same key and sequence space as whole sealed datagrams, or with bit1 as well
AES-256-GCM ``ciphertext + tag`` under its own per-direction key, nonce
``0(4) + seq`` (only toward peers whose heartbeats set ``FEATURE_AESGCM``);
plain: it is the body.
Whole datagrams keep the version-1 header.

All integers big-endian. Peer names are the 48-bit MAC form ("7e:12:34:56:78:9a");
the broadcast destination is ff:ff:ff:ff:ff:ff. Decoders check every length before
slicing and raise ``ProtocolError`` (with a short ``cause`` used for counting).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from weave_fdp.datapath.sleeve.drops import SleeveDrop
from weave_fdp.errors import ProtocolError

VERSION = 1                              # header of whole datagrams
PIECE_VERSION = 2                        # header of pieces; also the highest version we speak
PORT = 6783
FLAG_SEALED = 0x01
FLAG_AESGCM = 0x02                       # pieces only, with SEALED: AES-256-GCM instead of secretbox
PIECE_FLAGS = FLAG_SEALED | FLAG_AESGCM
FEATURE_AESGCM = 0x01                    # heartbeat feature bit: this peer opens AES-256-GCM pieces
FEATURE_BIG = 0x02                       # heartbeat feature bit: this peer takes frames over 64 KiB (E_BIG)

HEADER = struct.Struct("!BB6s")          # version, flags, sender
SEQ = struct.Struct("!Q")
MAC_LEN = 16                             # secretbox authenticator
SEAL_OVERHEAD = SEQ.size + MAC_LEN       # bytes a sealed datagram adds
ENTRY = struct.Struct("!6s6sBBH")        # src, dst, eflags, ttl, len
FRAG = struct.Struct("!III")             # id, offset, total
VNET_LEN = 10                            # struct virtio_net_hdr

T_FRAMES = 1
T_HEARTBEAT = 2
T_HEARTBEAT_ACK = 3
T_PMTU_PROBE = 4
T_PMTU_ACK = 5
TYPES = {T_FRAMES, T_HEARTBEAT, T_HEARTBEAT_ACK, T_PMTU_PROBE, T_PMTU_ACK}

E_VNET = 0x01
E_FRAG = 0x02
E_BIG = 0x04
ENTRY_MAX = 0xFFFF                       # the largest frame an entry's len field states
DEFAULT_TTL = 16                         # relays decrement; 0 is dropped (loops during route churn)

PIECE = struct.Struct("!BB6sQII")       # version 2, flags, sender, seq, total, offset
PIECE_HEAD = struct.Struct("!BB6sQI")    # the part every piece of one logical datagram shares
PIECE_OFFSET = struct.Struct("!I")
MAX_PIECED = 0x40000 + 1024              # largest logical datagram cut into pieces

HB = struct.Struct("!QH")
HB_ACK = struct.Struct("!Q")
PROBE = struct.Struct("!IH")

BROADCAST = b"\xff" * 6
IP_UDP_OVERHEAD = 28                     # IPv4 + UDP headers around our payload
# Bytes one datagram adds around a single unfragmented frame (without IP/UDP).
FRAME_OVERHEAD = HEADER.size + 1 + ENTRY.size


@functools.lru_cache(maxsize=256)
def piece_offsets(first: int, chunk: int, k: int) -> tuple[bytes, ...]:
    """The offset fields of ``k`` pieces in a row from ``first`` in steps of ``chunk``
    (cached: a train's offsets repeat from datagram to datagram, on both sides)."""
    return tuple(PIECE_OFFSET.pack(first + i * chunk) for i in range(k))


@functools.lru_cache(maxsize=256)
def piece_offset_column(first: int, chunk: int, k: int) -> bytes:
    """:func:`piece_offsets` joined: the offset column a whole train's headers carry."""
    return b"".join(piece_offsets(first, chunk, k))


class WireError(ProtocolError):
    """A datagram that does not decode; ``cause`` names the drop reason for counters."""

    def __init__(self, cause: SleeveDrop, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def name_to_bytes(name: str) -> bytes:
    """"7e:12:34:56:78:9a" -> 6 bytes; raises ProtocolError on anything else."""
    try:
        raw = bytes.fromhex(name.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6 or name.count(":") != 5:
        raise ProtocolError(f"bad peer name {name!r}", fix="peer names look like 7e:12:34:56:78:9a")
    return raw


def bytes_to_name(raw: bytes) -> str:
    """6 bytes -> "7e:12:34:56:78:9a"."""
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class Header:
    """The clear header of a datagram."""

    sealed: bool
    sender: bytes        # 6 bytes
    seq: int             # 0 when unsealed
    body_offset: int     # where the body (or the sealed box) starts


def encode_header(sender: bytes, *, sealed: bool = False) -> bytes:
    return HEADER.pack(VERSION, FLAG_SEALED if sealed else 0, sender)


def decode_header(buf: bytes | memoryview) -> Header:
    """Parse the clear header; the body starts at ``Header.body_offset``."""
    if len(buf) < HEADER.size:
        raise WireError(SleeveDrop.TRUNCATED, f"datagram of {len(buf)} bytes is shorter than the sleeve header")
    ver, flags, sender = HEADER.unpack_from(buf, 0)
    if ver != VERSION:
        raise WireError(SleeveDrop.BAD_VERSION, f"sleeve version {ver} is not supported (this peer speaks {VERSION})")
    if flags & ~FLAG_SEALED:
        raise WireError(SleeveDrop.BAD_FLAGS, f"unknown sleeve header flags {flags:#x}")
    if flags & FLAG_SEALED:
        if len(buf) < HEADER.size + SEAL_OVERHEAD + 1:
            raise WireError(SleeveDrop.TRUNCATED, "sealed datagram shorter than sequence number and authenticator")
        (seq,) = SEQ.unpack_from(buf, HEADER.size)
        return Header(True, bytes(sender), seq, HEADER.size + SEQ.size)
    if len(buf) < HEADER.size + 1:
        raise WireError(SleeveDrop.TRUNCATED, "datagram has a header but no body")
    return Header(False, bytes(sender), 0, HEADER.size)


@dataclass(frozen=True)
class Entry:
    """One frame (or fragment of a frame) inside a FRAMES body."""

    src: bytes
    dst: bytes
    flags: int
    ttl: int
    payload: memoryview   # the frame, or FRAG header + chunk

    @property
    def is_frag(self) -> bool:
        return bool(self.flags & E_FRAG)


def encode_entry(src: bytes, dst: bytes, payload: bytes | memoryview, *, flags: int = 0,
                 ttl: int = DEFAULT_TTL) -> bytes:
    """Entry header for ``payload``; callers join header and payload (no copy here)."""
    n = len(payload)
    if n > ENTRY_MAX and not flags & E_BIG:
        raise ProtocolError(f"sleeve entry of {n} bytes exceeds 65535; fragment it")
    return ENTRY.pack(src, dst, flags, ttl, n & 0xFFFF)


def big_len(field: int, rest: int) -> int:
    """Length of an E_BIG entry's frame: ``rest`` (the bytes to the end of the body) when it
    is over 65,535 and its low 16 bits are the len ``field``; -1 otherwise."""
    return rest if rest > ENTRY_MAX and rest & 0xFFFF == field else -1


def iter_entries(body: memoryview) -> Iterator[Entry]:
    """Entries of a FRAMES body (``body`` starts after the type byte)."""
    off, end = 0, len(body)
    if end == 0:
        raise WireError(SleeveDrop.EMPTY, "FRAMES datagram carries no frame")
    while off < end:
        if end - off < ENTRY.size:
            raise WireError(SleeveDrop.TRUNCATED, f"entry header cut short at byte {off}")
        src, dst, flags, ttl, n = ENTRY.unpack_from(body, off)
        off += ENTRY.size
        if flags & E_BIG and not flags & E_FRAG:
            n = big_len(n, end - off)
            if n < 0:
                raise WireError(SleeveDrop.BAD_LENGTH, f"big entry of {end - off} bytes is not over 65535 "
                                                       "or disagrees with its len field")
        if n > end - off:
            raise WireError(SleeveDrop.BAD_LENGTH, f"entry declares {n} bytes but only {end - off} remain")
        if flags & ~(E_VNET | E_FRAG | E_BIG) or flags & E_FRAG and flags & E_BIG:
            raise WireError(SleeveDrop.BAD_FLAGS, f"unknown entry flags {flags:#x}")
        if flags & E_FRAG and n < FRAG.size + 1:
            raise WireError(SleeveDrop.TRUNCATED, "fragment entry shorter than its fragment header")
        if not flags & E_FRAG and n < 14 + (VNET_LEN if flags & E_VNET else 0):
            raise WireError(SleeveDrop.RUNT, f"frame of {n} bytes is shorter than an Ethernet header")
        yield Entry(bytes(src), bytes(dst), flags, ttl, body[off:off + n])
        off += n


def decode_frag(payload: memoryview) -> tuple[int, int, int, memoryview]:
    """(id, offset, total, chunk) of a fragment entry; checks the chunk lies inside total."""
    fid, offset, total = FRAG.unpack_from(payload, 0)
    chunk = payload[FRAG.size:]
    if total > MAX_FRAME or offset + len(chunk) > total:
        raise WireError(SleeveDrop.BAD_LENGTH, f"fragment [{offset}, +{len(chunk)}) outside frame of {total} bytes")
    return fid, offset, total, chunk


MAX_FRAME = VNET_LEN + 14 + 4 + 0x40000   # vnet + Ethernet + VLAN + a big GSO super-frame


def encode_heartbeat(ts_ns: int, pmtu: int, version: int = PIECE_VERSION, features: int = 0) -> bytes:
    """A heartbeat; the trailing ``version`` and ``features`` bytes (v2) are ignored by
    version-1 peers."""
    return (bytes([T_HEARTBEAT]) + HB.pack(ts_ns & 0xFFFFFFFFFFFFFFFF, pmtu & 0xFFFF)
            + bytes([version & 0xFF, features & 0xFF]))


def heartbeat_version(body: memoryview) -> tuple[int, int]:
    """(wire version, feature bits) a heartbeat body (after the type byte) advertises:
    (1, 0) when absent (a version-1 peer)."""
    version = body[HB.size] if len(body) > HB.size else 1
    features = body[HB.size + 1] if len(body) > HB.size + 1 else 0
    return version, features


@dataclass(frozen=True)
class Piece:
    """One piece of a logical datagram (version 2)."""

    sealed: bool
    sender: bytes
    seq: int
    total: int
    aesgcm: bool
    offset: int
    chunk: memoryview


# A piece's flags by (sealed, AES-256-GCM).
PIECE_FLAGS_OF = {(False, False): 0, (False, True): 0, (True, False): FLAG_SEALED,
                  (True, True): FLAG_SEALED | FLAG_AESGCM}


def encode_piece_head(sender: bytes, seq: int, total: int, *, sealed: bool, aesgcm: bool = False) -> bytes:
    """The 20 bytes every piece of one logical datagram starts with; append ``PIECE_OFFSET``."""
    return PIECE_HEAD.pack(PIECE_VERSION, PIECE_FLAGS_OF[sealed, aesgcm], sender, seq, total)


def split_pieces(sender: bytes, seq: int, data: bytes | memoryview, seg: int, *, sealed: bool,
                 aesgcm: bool = False) -> list[bytes]:
    """``data`` as piece datagrams of ``seg`` bytes (the last shorter): the reference encoder."""
    chunk = seg - PIECE.size
    if chunk < 64:
        raise ValueError(f"segment of {seg} bytes too small for pieces")
    head = encode_piece_head(sender, seq, len(data), sealed=sealed, aesgcm=aesgcm)
    mv = memoryview(data)
    return [head + PIECE_OFFSET.pack(off) + bytes(mv[off:off + chunk]) for off in range(0, len(data), chunk)]


def decode_piece(buf: bytes | memoryview) -> Piece:
    """Parse a version-2 piece datagram; checks what the reassembler relies on."""
    if len(buf) < PIECE.size + 1:
        raise WireError(SleeveDrop.TRUNCATED, f"piece of {len(buf)} bytes is shorter than its header")
    ver, flags, sender, seq, total, offset = PIECE.unpack_from(buf, 0)
    if ver != PIECE_VERSION:
        raise WireError(SleeveDrop.BAD_VERSION, f"piece with version {ver}")
    if flags & ~PIECE_FLAGS or flags == FLAG_AESGCM:
        raise WireError(SleeveDrop.BAD_FLAGS, f"unknown piece flags {flags:#x}")
    n = len(buf) - PIECE.size
    if total > MAX_PIECED or offset + n > total:
        raise WireError(SleeveDrop.BAD_LENGTH, f"piece [{offset}, +{n}) outside a datagram of {total} bytes")
    return Piece(bool(flags & FLAG_SEALED), bytes(sender), seq, total, bool(flags & FLAG_AESGCM), offset,
                 memoryview(buf)[PIECE.size:])


def encode_heartbeat_ack(ts_ns: int) -> bytes:
    return bytes([T_HEARTBEAT_ACK]) + HB_ACK.pack(ts_ns & 0xFFFFFFFFFFFFFFFF)


def encode_probe(probe_id: int, size: int, overhead: int) -> bytes:
    """A PMTU probe body padded so the whole UDP payload is ``size`` bytes.

    ``overhead`` is what the caller adds around the body (header, sealing).
    """
    body = bytes([T_PMTU_PROBE]) + PROBE.pack(probe_id & 0xFFFFFFFF, size & 0xFFFF)
    pad = size - overhead - len(body)
    return body + bytes(max(0, pad))


def encode_probe_ack(probe_id: int, size: int) -> bytes:
    return bytes([T_PMTU_ACK]) + PROBE.pack(probe_id & 0xFFFFFFFF, size & 0xFFFF)


def decode_fixed(body: memoryview, st: struct.Struct, what: str) -> tuple[int, ...]:
    """Unpack the fixed part of a control body (after the type byte)."""
    if len(body) < st.size:
        raise WireError(SleeveDrop.TRUNCATED, f"{what} of {len(body)} bytes, expected {st.size}")
    return st.unpack_from(body, 0)


def body_type(body: memoryview) -> int:
    if len(body) < 1:
        raise WireError(SleeveDrop.TRUNCATED, "empty body")
    t = body[0]
    if t not in TYPES:
        raise WireError(SleeveDrop.BAD_TYPE, f"unknown sleeve message type {t}")
    return t
