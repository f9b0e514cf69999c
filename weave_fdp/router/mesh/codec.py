"""Wire format of the control connection (docs/PROTOCOL.md is the prose of this file).

Everything here is pure: bytes in, typed values out. Every decoder checks lengths
and types and raises ProtocolError on anything unexpected; nothing from the network
reaches the rest of the router unchecked.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from weave_fdp.errors import ProtocolError

MAGIC = b"WFDP"
PROTOCOL_MIN = 1
PROTOCOL_MAX = 2      # 2: topology digests and requests (section 7 of docs/PROTOCOL.md)
DIGEST_VERSION = 2    # links at this version or above gossip topology by digest
PREAMBLE = struct.Struct("!4sBB")       # magic, min version, max version
FRAME_HEADER = struct.Struct("!I")      # payload length, big endian
MAX_FRAME = 8 << 20                     # bytes; larger frames are refused
MAX_HELLO = 1024                        # bytes; hello and features frames are small
MAX_STR = 255
MAX_LIST = 65536
MAX_NICKNAME_BYTES = MAX_STR            # UTF-8 bytes; so the sealed features frame fits MAX_HELLO
MAX_HOSTNAME = 253                      # characters of a DNS name in a peer address

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


def nickname_problem(nick: str) -> str | None:
    """Why ``nick`` cannot be sent in a features frame (None: it can).

    The decoder refuses strings over MAX_STR characters and frames over MAX_HELLO
    bytes; a nickname of at most MAX_NICKNAME_BYTES UTF-8 bytes keeps both, sealed
    and with every other field at its largest (a unit test proves it).
    """
    if not nick:
        return "is empty"
    size = len(nick.encode("utf-8", "surrogatepass"))
    if size > MAX_NICKNAME_BYTES:
        return f"is {size} bytes long (at most {MAX_NICKNAME_BYTES} bytes of UTF-8 fit the handshake)"
    if any(not c.isprintable() for c in nick):
        return "contains control characters"
    return None


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

class ConnEntry(NamedTuple):
    """One connection a peer announces (a tuple: thousands are decoded per topology message)."""

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

    # derived once per entry (they are read on every route recompute and gossip round)
    _key: tuple[int, int, int] = field(init=False, repr=False, compare=False)
    established_peers: tuple[str, ...] = field(init=False, repr=False, compare=False)
    established_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _derive(self.__dict__, self.incarnation, self.version, self.uid, self.connections)

    def key(self) -> tuple[int, int, int]:
        """Ordering of updates: later incarnation first, then higher version."""
        return self._key

    @classmethod
    def decoded(cls, name: str, nickname: str, uid: int, incarnation: int, version: int, short_id: int,
                connections: tuple[ConnEntry, ...], key: tuple[int, int, int], established: set[str]
                ) -> "PeerEntry":
        """Construct without the frozen-dataclass setattr calls (the decoder's hot path, which
        has gathered ``key`` and the ``established`` peers on its way)."""
        e = object.__new__(cls)
        e.__dict__.update(name=name, nickname=nickname, uid=uid, incarnation=incarnation, version=version,
                          short_id=short_id, connections=connections, _key=key,
                          established_set=frozenset(established), established_peers=tuple(sorted(established)))
        return e


def _derive(d: dict[str, Any], inc: int, ver: int, uid: int, conns: tuple[ConnEntry, ...]) -> None:
    d["_key"] = (inc, ver, uid)
    est = {c[0] for c in conns if c[3]}
    d["established_set"] = frozenset(est)
    d["established_peers"] = tuple(sorted(est))


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
    """encode_topology with each entry's encoding kept on the (immutable) entry: the same
    entries go to several neighbours."""

    def encode(self, entries: list[PeerEntry]) -> bytes:
        parts = []
        for e in entries:
            d = e.__dict__
            wire = d.get("_wire")
            if wire is None:
                wire = d["_wire"] = _encode_entry(e)
            parts.append(wire)
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
    tnew = tuple.__new__   # ConnEntry from the validated 4-element list, without _make's wrapper
    good = _GOOD_NAMES
    u64 = 1 << 64
    for item in body:
        if type(item) is not list or len(item) != 5:
            raise ProtocolError("topology: peer entry is not a 5-element array")
        name, inc, ver, uid, rest = item
        if type(name) is not str or name not in good:
            name = check_peer_name(name, w)
        # (type checks, not isinstance: bool is an int)
        if type(inc) is not int or type(ver) is not int or type(uid) is not int \
                or not (0 <= inc < u64 and 0 <= ver < u64 and 0 <= uid < u64):
            raise ProtocolError("topology: incarnation, version or uid is not a u64")
        key = (inc, ver, uid)
        if wanted is not None and not wanted(name, key):
            continue
        if type(rest) is not bytes:
            raise ProtocolError("topology: entry body is not bin")
        inner = unpack(rest, w)
        if type(inner) is not list or len(inner) != 3:
            raise ProtocolError("topology: entry body is not a 3-element array")
        nick, sid, conns = inner
        if type(nick) is not str or len(nick) > MAX_STR:
            raise ProtocolError("topology: nickname is not a short string")
        if type(sid) is not int or not 0 <= sid < 4096:
            raise ProtocolError("topology: short ID is not a u12")
        if type(conns) is not list:
            raise ProtocolError("topology: connections is not an array")
        centries = []
        est = set()
        for c in conns:
            if type(c) is not list or len(c) != 4:
                raise ProtocolError("topology: malformed connection entry")
            peer, addr, outbound, established = c
            if type(addr) is not str or len(addr) > MAX_STR or type(outbound) is not bool \
                    or type(established) is not bool:
                raise ProtocolError("topology: malformed connection entry")
            if type(peer) is not str or peer not in good:
                check_peer_name(peer, w)
            centries.append(tnew(ConnEntry, c))
            if established:
                est.add(peer)
        out.append(PeerEntry.decoded(name, nick, uid, inc, ver, sid, tuple(centries), key, est))
    return out


# ---------------------------------------------------------------- topology digests (protocol 2)

#: gossip channels of protocol 2 (a version 1 peer never receives them, and would ignore them)
TOPOLOGY_DIGEST = "topology.digest"
TOPOLOGY_REQUEST = "topology.request"

DIGEST_DELTA = 0        # "I now hold these": receiver requests the ones it lacks
DIGEST_FULL = 1         # "this is all I hold": receiver pushes what the sender lacks
DIGEST_FULL_REPLY = 2   # as FULL, and the receiver answers with its own FULL
DIGEST_SUMMARY = 3      # count + fingerprint of all I hold: receiver answers FULL_REPLY on a mismatch
DIGEST_KINDS = (DIGEST_DELTA, DIGEST_FULL, DIGEST_FULL_REPLY, DIGEST_SUMMARY)

DIGEST_RECORD = struct.Struct("!6sQQQ")   # name, incarnation, version, uid: 30 bytes
SUMMARY = struct.Struct("!I16s")          # entry count, fingerprint
NAME_BYTES = 6

Key = tuple[int, int, int]

_NAME_TO_BYTES: dict[str, bytes] = {}
_BYTES_TO_NAME: dict[bytes, str] = {}


# one tuple per distinct key: a router keeps what each neighbour holds, the same keys per link
_KEYS: dict[Key, Key] = {}


def name_to_bytes(name: str) -> bytes:
    b = _NAME_TO_BYTES.get(name)
    if b is None:
        b = bytes.fromhex(name.replace(":", ""))
        if len(_NAME_TO_BYTES) > 100_000:
            _NAME_TO_BYTES.clear()
        _NAME_TO_BYTES[name] = b
    return b


def bytes_to_name(b: bytes) -> str:
    n = _BYTES_TO_NAME.get(b)
    if n is None:
        n = b.hex(":")
        if len(_BYTES_TO_NAME) > 100_000:
            _BYTES_TO_NAME.clear()
        _BYTES_TO_NAME[b] = n
    return n


def encode_digest(kind: int, items: Iterable[tuple[str, Key]]) -> bytes:
    """u8 kind, then one 30-byte record per (name, key) (DELTA, FULL, FULL_REPLY)."""
    rec, get = DIGEST_RECORD.pack, _NAME_TO_BYTES.get
    return bytes([kind]) + b"".join(rec(get(n) or name_to_bytes(n), *k) for n, k in items)


def fingerprint(items: Iterable[tuple[str, Key]]) -> bytes:
    """16 bytes naming a whole topology view: SHA-256 of its records in name order."""
    rec = DIGEST_RECORD.pack
    return hashlib.sha256(b"".join(rec(name_to_bytes(n), *k) for n, k in sorted(items))).digest()[:16]


def encode_summary(items: list[tuple[str, Key]]) -> bytes:
    return bytes([DIGEST_SUMMARY]) + SUMMARY.pack(len(items), fingerprint(items))


def decode_digest(data: bytes) -> tuple[int, list[tuple[str, Key]] | tuple[int, bytes]]:
    """-> (kind, [(name, key)]) or (DIGEST_SUMMARY, (count, fingerprint)); ProtocolError on bad input."""
    if not data:
        raise ProtocolError("topology digest: empty")
    kind, body = data[0], data[1:]
    if kind not in DIGEST_KINDS:
        raise ProtocolError(f"topology digest: unknown kind {kind}")
    if kind == DIGEST_SUMMARY:
        if len(body) != SUMMARY.size:
            raise ProtocolError(f"topology digest: summary of {len(body)} bytes, expected {SUMMARY.size}")
        return kind, SUMMARY.unpack(body)
    if len(body) % DIGEST_RECORD.size:
        raise ProtocolError(f"topology digest: {len(body)} bytes is not a whole number of records")
    if len(body) // DIGEST_RECORD.size > MAX_LIST:
        raise ProtocolError("topology digest: too many records")
    get = _BYTES_TO_NAME.get
    if len(_KEYS) > 100_000:
        _KEYS.clear()
    key = _KEYS.setdefault
    return kind, [(get(n) or bytes_to_name(n), key((inc, ver, uid), (inc, ver, uid)))
                  for n, inc, ver, uid in DIGEST_RECORD.iter_unpack(body)]


def encode_request(names: Iterable[str]) -> bytes:
    """The peer names whose entries we ask for: 6 bytes each."""
    return b"".join(name_to_bytes(n) for n in names)


def decode_request(data: bytes) -> list[str]:
    if len(data) % NAME_BYTES or len(data) // NAME_BYTES > MAX_LIST:
        raise ProtocolError(f"topology request: {len(data)} bytes is not a list of 6-byte names")
    return [bytes_to_name(data[i:i + NAME_BYTES]) for i in range(0, len(data), NAME_BYTES)]
