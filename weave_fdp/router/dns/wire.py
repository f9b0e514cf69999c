"""The gossip payload of the mesh channel ``dns`` (docs/DNS.md, "Gossip").

    msgpack map {"v": 1, "e": [[hostname, origin, container, addr, version, tombstone, created], ...]}

``addr`` is the 4 bytes of the IPv4 address. A later version may append fields to an
entry (a version 1 reader ignores them) or change the map; a payload of an unknown
version is refused with a reason, never half-read. Everything is checked before use:
this is what the network sends.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import msgpack

from weave_fdp.errors import ProtocolError, UsageError
from weave_fdp.router.dns.names import check_name
from weave_fdp.router.dns.records import Entry

VERSION = 1
MAX_ENTRIES = 65536      # entries per payload
MAX_STR = 255            # bytes of a container id
MAX_INT = 2**63 - 1
_PEER = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def encode(entries: list[Entry]) -> bytes:
    return msgpack.packb({"v": VERSION, "e": [
        [e.hostname, e.origin, e.container, ipaddress.IPv4Address(e.addr).packed, e.version, e.tombstone, e.created]
        for e in entries]}, use_bin_type=True)


def decode(payload: bytes) -> list[Entry]:
    """Entries of a payload; ProtocolError saying what is wrong with it."""
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_str_len=1 << 16,
                              max_bin_len=1 << 16, max_array_len=MAX_ENTRIES, max_map_len=16, max_ext_len=0)
    except Exception as exc:   # msgpack raises many types on garbage
        raise ProtocolError(f"dns gossip: undecodable payload ({type(exc).__name__})") from None
    if not isinstance(msg, dict):
        raise ProtocolError("dns gossip: payload is not a map")
    version = msg.get("v")
    if version != VERSION:
        raise ProtocolError(f"dns gossip: version {version!r} not understood (this router speaks {VERSION})")
    raw = msg.get("e")
    if not isinstance(raw, list):
        raise ProtocolError("dns gossip: no entry list")
    return [_entry(item) for item in raw]


def _entry(item: Any) -> Entry:
    if not isinstance(item, list) or len(item) < 7:
        raise ProtocolError("dns gossip: malformed entry")
    host, origin, container, addr, version, tomb, created = item[:7]
    if not isinstance(host, str) or not isinstance(container, str) or len(container.encode()) > MAX_STR:
        raise ProtocolError("dns gossip: malformed entry")
    try:
        check_name(host)
    except UsageError:
        raise ProtocolError(f"dns gossip: bad host name {host[:64]!r}") from None
    if not host.endswith("."):
        raise ProtocolError(f"dns gossip: host name {host[:64]!r} is not fully qualified")
    if not isinstance(origin, str) or not _PEER.match(origin):
        raise ProtocolError("dns gossip: bad origin peer name")
    if not isinstance(addr, bytes) or len(addr) != 4:
        raise ProtocolError("dns gossip: address is not 4 bytes")
    for v in (version, tomb, created):
        if type(v) is not int or not 0 <= v <= MAX_INT:
            raise ProtocolError("dns gossip: bad version or time")
    if version < 1:
        raise ProtocolError("dns gossip: version 0")
    return Entry(host, origin, container, str(ipaddress.IPv4Address(addr)), version, tomb, created)
