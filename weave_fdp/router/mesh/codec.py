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
PROTOCOL_MAX = 3      # 2: topology digests and requests; 3: fixed-layout binary entries (section 7 of docs/PROTOCOL.md)
DIGEST_VERSION = 2    # links at this version or above gossip topology by digest
BINARY_ENTRIES_VERSION = 3   # links at this version or above carry topology entries in the binary layout
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

NAME_BYTES = 6                          # a peer name on the wire: its 6 octets
KEY = struct.Struct("!QQQ")             # an entry's (incarnation, version, uid), 24 bytes: as bytes,
                                        # keys compare as the tuples do (big-endian, unsigned)

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
    nb: bytes = field(init=False, repr=False, compare=False)       # the name's 6 bytes
    record: bytes = field(init=False, repr=False, compare=False)   # its 30-byte digest record
    established_peers: tuple[str, ...] = field(init=False, repr=False, compare=False)
    established_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _derive(self.__dict__, self.name, self.incarnation, self.version, self.uid, self.connections)

    def key(self) -> tuple[int, int, int]:
        """Ordering of updates: later incarnation first, then higher version."""
        return self._key

    def __getattr__(self, attr: str) -> Any:
        # an entry decoded from the binary layout (protocol 3) decodes its connection list on
        # first use: routes need only the established peers, which the decoder gathered
        if attr == "connections":
            src = self.__dict__.get("_conn_src")
            if src is not None:
                conns = self.__dict__["connections"] = _connections_v3(*src)
                return conns
        elif attr == "established_peers":   # (sorted: only the reference graph and tests want it)
            peers = self.__dict__["established_peers"] = tuple(sorted(self.__dict__["established_set"]))
            return peers
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    @classmethod
    def decoded(cls, name: str, nickname: str, uid: int, incarnation: int, version: int, short_id: int,
                connections: tuple[ConnEntry, ...], key: tuple[int, int, int], established: set[str],
                record: bytes) -> "PeerEntry":
        """Construct without the frozen-dataclass setattr calls (the decoder's hot path, which
        has gathered ``key``, the digest ``record`` and the ``established`` peers on its way)."""
        e = object.__new__(cls)
        e.__dict__.update(name=name, nickname=nickname, uid=uid, incarnation=incarnation, version=version,
                          short_id=short_id, connections=connections, _key=key, nb=record[:NAME_BYTES],
                          record=record,
                          established_set=frozenset(established), established_peers=tuple(sorted(established)))
        return e


def _derive(d: dict[str, Any], name: str, inc: int, ver: int, uid: int, conns: tuple[ConnEntry, ...]) -> None:
    d["_key"] = (inc, ver, uid)
    d["nb"] = nb = name_to_bytes(name)
    d["record"] = nb + KEY.pack(inc, ver, uid)
    est = {c[0] for c in conns if c[3]}
    d["established_set"] = frozenset(est)
    d["established_peers"] = tuple(sorted(est))


def _check_address(addr: str, what: str) -> None:
    if not addr.isascii():
        raise ProtocolError(f"{what}: connection address is not ASCII")


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
    """encode_topology (or encode_topology_v3) with each entry's encoding kept on the
    (immutable) entry: the same entries go to several neighbours; an entry decoded from
    the binary layout keeps the bytes it came in."""

    def encode(self, entries: list[PeerEntry], version: int = 2) -> bytes:
        binary = version >= BINARY_ENTRIES_VERSION
        attr, encode_entry = ("_wire3", _encode_entry_v3) if binary else ("_wire", _encode_entry)
        parts = []
        for e in entries:
            d = e.__dict__
            wire = d.get(attr)
            if wire is None:
                wire = d[attr] = encode_entry(e)
            parts.append(wire)
        body = b"".join(parts)
        return body if binary else _array_header(len(parts)) + body


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
        if type(conns) is not list or len(conns) > 65535:   # (65535: what protocol 3 can carry)
            raise ProtocolError("topology: connections is not an array of at most 65535")
        centries = []
        est = set()
        for c in conns:
            if type(c) is not list or len(c) != 4:
                raise ProtocolError("topology: malformed connection entry")
            peer, addr, outbound, established = c
            if type(addr) is not str or len(addr) > MAX_STR or type(outbound) is not bool \
                    or type(established) is not bool or not addr.isascii():
                raise ProtocolError("topology: malformed connection entry")
            if type(peer) is not str or peer not in good:
                check_peer_name(peer, w)
            centries.append(tnew(ConnEntry, c))
            if established:
                est.add(peer)
        nb = _NAME_TO_BYTES.get(name) or name_to_bytes(name)
        out.append(PeerEntry.decoded(name, nick, uid, inc, ver, sid, tuple(centries), key, est,
                                     nb + KEY.pack(inc, ver, uid)))
    return out


# ---------------------------------------------------------------- topology entries, protocol 3

#: name, incarnation, version, uid (the 30-byte digest record), then the length of the rest
ENTRY_HEAD = struct.Struct("!6sQQQI")
#: the rest: short ID, nickname length, connection count; then the nickname (UTF-8), the
#: connection table and the addresses (ASCII) one after the other, in table order
ENTRY_REST = struct.Struct("!HHH")
CONN_V3 = struct.Struct("!6sBB")     # peer name, flags, address length
CONN_OUTBOUND = 1
CONN_ESTABLISHED = 2
_RECORD = 30                         # bytes of ENTRY_HEAD that are the digest record


def _encode_entry_v3(e: PeerEntry) -> bytes:
    nick = e.nickname.encode("utf-8")
    table, addrs = [], []
    for c in e.connections:
        a = c.address.encode("ascii")
        table.append(CONN_V3.pack(name_to_bytes(c.peer), (c.outbound and CONN_OUTBOUND)
                                  | (c.established and CONN_ESTABLISHED), len(a)))
        addrs.append(a)
    rest = ENTRY_REST.pack(e.short_id, len(nick), len(table)) + nick + b"".join(table) + b"".join(addrs)
    return ENTRY_HEAD.pack(name_to_bytes(e.name), e.incarnation, e.version, e.uid, len(rest)) + rest


def encode_topology_v3(entries: list[PeerEntry]) -> bytes:
    """Entries in the binary layout of protocol 3, one after the other (no count: the
    payload's length ends the list)."""
    return b"".join(_encode_entry_v3(e) for e in entries)


def _connections_v3(table: bytes, addrs: bytes) -> tuple[ConnEntry, ...]:
    """The connection list of a protocol 3 entry (the decoder checked the layout)."""
    out, pos, tnew = [], 0, tuple.__new__
    get = _BYTES_TO_NAME.get
    for peer, flags, alen in CONN_V3.iter_unpack(table):
        out.append(tnew(ConnEntry, (get(peer) or bytes_to_name(peer), addrs[pos:pos + alen].decode("ascii"),
                                    bool(flags & CONN_OUTBOUND), bool(flags & CONN_ESTABLISHED))))
        pos += alen
    return tuple(out)


def decode_topology_v3(data: bytes, wanted: "Callable[[str, tuple[int, int, int]], bool] | None" = None
                       ) -> list[PeerEntry]:
    """decode_topology for protocol 3 links. Every entry's layout is checked, wanted or
    not; a wanted one keeps its bytes (to forward them) and decodes its connection list
    only when it is first used (PeerEntry.connections)."""
    w = "topology"
    out: list[PeerEntry] = []
    pos, end, n = 0, len(data), 0
    head, rest_head, hsize, rsize = ENTRY_HEAD.unpack_from, ENTRY_REST.unpack_from, ENTRY_HEAD.size, ENTRY_REST.size
    get = _BYTES_TO_NAME.get
    while pos < end:
        n += 1
        if n > MAX_LIST:
            raise ProtocolError("topology: too many entries")
        if end - pos < hsize + rsize:
            raise ProtocolError("topology: truncated entry")
        nb, inc, ver, uid, length = head(data, pos)
        start, stop = pos + hsize, pos + hsize + length
        if stop > end or length < rsize:
            raise ProtocolError("topology: entry length exceeds the payload")
        sid, nlen, count = rest_head(data, start)
        tbl = start + rsize + nlen
        ab = tbl + count * CONN_V3.size
        if ab > stop:
            raise ProtocolError("topology: entry length does not fit its connection table")
        table = data[tbl:ab]
        if count and (max(table[6::8]) > 3 or sum(table[7::8]) != stop - ab):
            raise ProtocolError("topology: malformed connection entry")
        if not count and ab != stop:
            raise ProtocolError("topology: entry length does not fit its connection table")
        if sid >= 4096:
            raise ProtocolError("topology: short ID is not a u12")
        name = get(nb) or bytes_to_name(nb)
        key = (inc, ver, uid)
        record_end, entry_pos = pos + _RECORD, pos
        pos = stop
        if wanted is not None and not wanted(name, key):
            continue
        try:
            nick = data[start + rsize:tbl].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("topology: nickname is not UTF-8") from None
        if len(nick) > MAX_STR:
            raise ProtocolError("topology: nickname is not a short string")
        addrs = data[ab:stop]
        if not addrs.isascii():
            raise ProtocolError("topology: connection address is not ASCII")
        est = {get(p) or bytes_to_name(p) for p in [table[i:i + 6] for i in range(0, len(table), 8)
                                                    if table[i + 6] & CONN_ESTABLISHED]}
        e = object.__new__(PeerEntry)
        e.__dict__.update(name=name, nickname=nick, uid=uid, incarnation=inc, version=ver, short_id=sid,
                          _key=key, nb=nb, record=data[entry_pos:record_end], established_set=frozenset(est),
                          _conn_src=(table, addrs),
                          _wire3=data[entry_pos:stop])
        out.append(e)
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
    return fingerprint_records([rec(name_to_bytes(n), *k) for n, k in items])


def fingerprint_records(records: Iterable[bytes]) -> bytes:
    """fingerprint() of packed 30-byte records (one per name: sorted as bytes, they are in
    name order, the name's octets coming first)."""
    return hashlib.sha256(b"".join(sorted(records))).digest()[:16]


def encode_summary(items: list[tuple[str, Key]]) -> bytes:
    return bytes([DIGEST_SUMMARY]) + SUMMARY.pack(len(items), fingerprint(items))


def split_digest(data: bytes) -> tuple[int, bytes]:
    """-> (kind, body) after the checks of decode_digest: a summary's body is SUMMARY.size
    bytes, any other's a whole number (at most MAX_LIST) of 30-byte records, left packed
    (the receiver compares records as bytes: name first, then the key, big-endian)."""
    if not data:
        raise ProtocolError("topology digest: empty")
    kind, body = data[0], data[1:]
    if kind not in DIGEST_KINDS:
        raise ProtocolError(f"topology digest: unknown kind {kind}")
    if kind == DIGEST_SUMMARY:
        if len(body) != SUMMARY.size:
            raise ProtocolError(f"topology digest: summary of {len(body)} bytes, expected {SUMMARY.size}")
        return kind, body
    if len(body) % DIGEST_RECORD.size:
        raise ProtocolError(f"topology digest: {len(body)} bytes is not a whole number of records")
    if len(body) // DIGEST_RECORD.size > MAX_LIST:
        raise ProtocolError("topology digest: too many records")
    return kind, body


def decode_digest(data: bytes) -> tuple[int, list[tuple[str, Key]] | tuple[int, bytes]]:
    """-> (kind, [(name, key)]) or (DIGEST_SUMMARY, (count, fingerprint)); ProtocolError on bad input."""
    kind, body = split_digest(data)
    if kind == DIGEST_SUMMARY:
        return kind, SUMMARY.unpack(body)
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
