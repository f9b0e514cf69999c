"""Wire format of the control connection (docs/PROTOCOL.md is the prose of this file).

Everything here is pure: bytes in, typed values out. Every decoder checks lengths
and types and raises ProtocolError on anything unexpected; nothing from the network
reaches the rest of the router unchecked.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from weave_fdp.errors import ProtocolError

MAGIC = b"WFDP"
PROTOCOL_MIN = 1
PROTOCOL_MAX = 1
PREAMBLE = struct.Struct("!4sBB")       # magic, min version, max version
FRAME_HEADER = struct.Struct("!I")      # payload length, big endian
MAX_FRAME = 8 << 20                     # bytes; larger frames are refused
MAX_HELLO = 1024                        # bytes; hello and features frames are small
MAX_STR = 255
MAX_LIST = 65536

# message tags (first byte of a frame's plaintext)
HEARTBEAT = 0x01
GOSSIP = 0x02
GOSSIP_UNICAST = 0x03
GOSSIP_BROADCAST = 0x04
OVERLAY_CONTROL = 0x05
CLOSE = 0x06
TAG_NAMES = {HEARTBEAT: "heartbeat", GOSSIP: "gossip", GOSSIP_UNICAST: "gossip-unicast",
             GOSSIP_BROADCAST: "gossip-broadcast", OVERLAY_CONTROL: "overlay-control", CLOSE: "close"}

PEER_NAME_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# ---------------------------------------------------------------- primitives

def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, what: str) -> Any:
    """msgpack -> Python, with limits; ProtocolError on garbage or trailing bytes."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                               max_str_len=MAX_FRAME,
                               max_bin_len=MAX_FRAME, max_array_len=MAX_LIST,
                               max_map_len=MAX_LIST, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError,
            UnicodeDecodeError, OverflowError) as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"{what}: undecodable msgpack ({type(exc).__name__})") from exc


def _get(body: dict, key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in body:
        raise ProtocolError(f"{what}: missing field {key!r}")
    val = body[key]
    # bool is an int subclass: keep them apart
    if isinstance(val, bool) and typ is int:
        raise ProtocolError(f"{what}: field {key!r} must be int, got bool")
    if not isinstance(val, typ):
        raise ProtocolError(f"{what}: field {key!r} has type {type(val).__name__}")
    if isinstance(val, str) and len(val) > MAX_STR:
        raise ProtocolError(f"{what}: field {key!r} longer than {MAX_STR}")
    return val


def _uint(body: dict, key: str, bits: int, what: str) -> int:
    val = _get(body, key, int, what)
    if not 0 <= val < (1 << bits):
        raise ProtocolError(f"{what}: field {key!r}={val} out of range for u{bits}")
    return val


_GOOD_NAMES: set[str] = set()  # names already validated (gossip repeats them a lot)


def check_peer_name(name: Any, what: str) -> str:
    if type(name) is str and name in _GOOD_NAMES:
        return name
    if not isinstance(name, str) or not PEER_NAME_RE.match(name):
        raise ProtocolError(f"{what}: bad peer name {name!r}"[:200])
    if len(_GOOD_NAMES) > 100_000:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)
    return name


def _u64(val: Any, key: str, what: str) -> int:
    if type(val) is not int or not 0 <= val < 1 << 64:
        raise ProtocolError(f"{what}: field {key!r} is not a u64")
    return val


# ---------------------------------------------------------------- preamble + frames

def encode_preamble(vmin: int = PROTOCOL_MIN, vmax: int = PROTOCOL_MAX) -> bytes:
    return PREAMBLE.pack(MAGIC, vmin, vmax)


def decode_preamble(data: bytes) -> tuple[int, int]:
    if len(data) != PREAMBLE.size:
        raise ProtocolError(f"preamble: expected {PREAMBLE.size} bytes, got {len(data)}")
    magic, vmin, vmax = PREAMBLE.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a weave-fdp peer (magic {magic!r})")
    if vmin > vmax:
        raise ProtocolError(f"preamble: min version {vmin} > max version {vmax}")
    return vmin, vmax


def negotiate(remote: tuple[int, int], local: tuple[int, int] = (PROTOCOL_MIN, PROTOCOL_MAX)) -> int:
    """Highest common version, or ProtocolError naming both ranges."""
    best = min(remote[1], local[1])
    if best < max(remote[0], local[0]):
        raise ProtocolError(f"protocol version mismatch: we speak {local[0]}..{local[1]}, "
                            f"peer speaks {remote[0]}..{remote[1]}")
    return best


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return FRAME_HEADER.pack(len(payload)) + payload


def decode_frame_length(header: bytes, limit: int = MAX_FRAME) -> int:
    if len(header) != FRAME_HEADER.size:
        raise ProtocolError("truncated frame header")
    (length,) = FRAME_HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds limit {limit}")
    return length


# ---------------------------------------------------------------- handshake bodies

@dataclass(frozen=True)
class Hello:
    """First frame after the preamble, always in the clear."""

    crypto: bool
    pubkey: bytes | None   # X25519 public key (32 bytes) when crypto


def encode_hello(h: Hello) -> bytes:
    return pack({"crypto": h.crypto, "pk": h.pubkey})


def decode_hello(data: bytes) -> Hello:
    body = unpack(data, "hello")
    if not isinstance(body, dict):
        raise ProtocolError("hello: not a map")
    crypto = _get(body, "crypto", bool, "hello")
    pk = body.get("pk")
    if crypto:
        if not isinstance(pk, bytes) or len(pk) != 32:
            raise ProtocolError("hello: crypto set but no 32-byte public key")
    elif pk is not None:
        raise ProtocolError("hello: public key without crypto")
    return Hello(crypto, pk if crypto else None)


@dataclass(frozen=True)
class Features:
    """Second frame (sealed when crypto): who the peer is and what it supports."""

    name: str
    nickname: str
    uid: int            # u64, random per start
    incarnation: int    # u64, start time in ms (orders incarnations of one name)
    short_id: int       # u12
    conn_id: int        # u64, random per connection
    overlays: tuple[str, ...]
    trusted: bool       # remote address is in the sender's --trusted-subnets
    port: int           # sender's listen port (for discovery of inbound peers)
    version: str        # software version


def encode_features(f: Features) -> bytes:
    return pack({"name": f.name, "nick": f.nickname, "uid": f.uid, "inc": f.incarnation,
                 "sid": f.short_id, "cid": f.conn_id, "ov": list(f.overlays), "tr": f.trusted,
                 "port": f.port, "ver": f.version})


def decode_features(data: bytes) -> Features:
    w = "features"
    body = unpack(data, w)
    if not isinstance(body, dict):
        raise ProtocolError("features: not a map")
    ov = _get(body, "ov", list, w)
    if len(ov) > 16 or not all(isinstance(o, str) and len(o) <= 32 for o in ov):
        raise ProtocolError("features: bad overlay list")
    return Features(
        name=check_peer_name(body.get("name"), w),
        nickname=_get(body, "nick", str, w),
        uid=_uint(body, "uid", 64, w),
        incarnation=_uint(body, "inc", 64, w),
        short_id=_uint(body, "sid", 12, w),
        conn_id=_uint(body, "cid", 64, w),
        overlays=tuple(ov),
        trusted=_get(body, "tr", bool, w),
        port=_uint(body, "port", 16, w),
        version=_get(body, "ver", str, w),
    )


# ---------------------------------------------------------------- messages

def encode_message(tag: int, body: Any) -> bytes:
    return bytes([tag]) + pack(body)


def decode_message(data: bytes) -> tuple[int, dict]:
    """Plaintext of a frame -> (tag, validated body)."""
    if not data:
        raise ProtocolError("empty message")
    tag = data[0]
    if tag not in TAG_NAMES:
        raise ProtocolError(f"unknown message tag 0x{tag:02x}")
    what = TAG_NAMES[tag]
    body = unpack(data[1:], what)
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: body is not a map")
    if tag == HEARTBEAT:
        return tag, {}
    if tag == CLOSE:
        return tag, {"r": _get(body, "r", str, what)}
    if tag == OVERLAY_CONTROL:
        return tag, {"p": _get(body, "p", bytes, what)}
    out = {"c": _get(body, "c", str, what), "p": _get(body, "p", bytes, what),
           "s": check_peer_name(body.get("s"), what)}
    if tag == GOSSIP_UNICAST:
        out["d"] = check_peer_name(body.get("d"), what)
    return tag, out


# ---------------------------------------------------------------- topology gossip payload

@dataclass(frozen=True)
class ConnEntry:
    peer: str
    address: str
    outbound: bool
    established: bool


@dataclass(frozen=True)
class PeerEntry:
    """One peer's self-description, as gossiped. Only its owner changes it."""

    name: str
    nickname: str
    uid: int
    incarnation: int
    version: int
    short_id: int
    connections: tuple[ConnEntry, ...]

    def key(self) -> tuple[int, int, int]:
        """Ordering of updates: later incarnation first, then higher version."""
        return (self.incarnation, self.version, self.uid)


def _encode_entry(e: PeerEntry) -> bytes:
    # [name, incarnation, version, uid, bin(msgpack [nickname, short_id, connections])]:
    # the ordering key stays outside, so receivers skip copies they already hold
    # without decoding the rest
    rest = pack([e.nickname, e.short_id, [[c.peer, c.address, c.outbound, c.established]
                                          for c in e.connections]])
    return pack([e.name, e.incarnation, e.version, e.uid, rest])


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_topology(entries: list[PeerEntry]) -> bytes:
    return _array_header(len(entries)) + b"".join(_encode_entry(e) for e in entries)


class TopologyEncoder:
    """encode_topology with a per-entry cache (the same entries go to every neighbour)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int], bytes]] = {}

    def encode(self, entries: list[PeerEntry]) -> bytes:
        parts = []
        for e in entries:
            hit = self._cache.get(e.name)
            if hit is None or hit[0] != e.key():
                hit = (e.key(), _encode_entry(e))
                self._cache[e.name] = hit
            parts.append(hit[1])
        return _array_header(len(parts)) + b"".join(parts)


def decode_topology(data: bytes, wanted: "Callable[[str, tuple[int, int, int]], bool] | None" = None
                    ) -> list[PeerEntry]:
    """Decode a topology payload; with ``wanted(name, key)``, entries it declines are skipped
    before their body is decoded (most gossip repeats what we know)."""
    w = "topology"
    body = unpack(data, w)
    if not isinstance(body, list):
        raise ProtocolError("topology: not a list")
    out = []
    for item in body:
        if not isinstance(item, list) or len(item) != 5:
            raise ProtocolError("topology: peer entry is not a 5-element array")
        name, inc, ver, uid, rest = item
        name = check_peer_name(name, w)
        key = (_u64(inc, "inc", w), _u64(ver, "ver", w), _u64(uid, "uid", w))
        if wanted is not None and not wanted(name, key):
            continue
        if type(rest) is not bytes:
            raise ProtocolError("topology: entry body is not bin")
        inner = unpack(rest, w)
        if not isinstance(inner, list) or len(inner) != 3:
            raise ProtocolError("topology: entry body is not a 3-element array")
        nick, sid, conns = inner
        fields = {"nick": nick, "sid": sid}
        if not isinstance(conns, list):
            raise ProtocolError("topology: connections is not an array")
        centries = []
        for c in conns:
            if (not isinstance(c, list) or len(c) != 4 or not isinstance(c[1], str) or len(c[1]) > MAX_STR
                    or not isinstance(c[2], bool) or not isinstance(c[3], bool)):
                raise ProtocolError("topology: malformed connection entry")
            centries.append(ConnEntry(check_peer_name(c[0], w), c[1], c[2], c[3]))
        out.append(PeerEntry(name, _get(fields, "nick", str, w), uid, inc, ver,
                             _uint(fields, "sid", 12, w), tuple(centries)))
    return out
