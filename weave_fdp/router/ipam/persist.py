"""IPAM's file in the state dir: the allocator's snapshot, framed so damage is detected.

Layout: ``WFIPAM`` (6 bytes), format version (1 byte, 1), CRC-32 of the body (4 bytes, big
endian), then the body: one msgpack map (``Allocator.snapshot``). A truncated or altered
file fails the CRC or the checks below and is refused with ``CorruptState``, naming the file
and the fix; it is never half-loaded. Pure bytes in, bytes out: the router writes them
atomically (temporary file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack

from weave_fdp.errors import FdpError

MAGIC = b"WFIPAM"
FORMAT = 1
HEADER = struct.Struct(">6sBI")
FILE_NAME = "ipam.bin"


class CorruptState(FdpError):
    """The IPAM file cannot be trusted."""


def encode(snapshot: dict[str, Any]) -> bytes:
    body = msgpack.packb(snapshot, use_bin_type=True)
    return HEADER.pack(MAGIC, FORMAT, zlib.crc32(body)) + body


def _fail(path: str, why: str) -> CorruptState:
    return CorruptState(f"IPAM state file {path} is unusable ({why})",
                        fix=f"restore it from a backup, or remove it (rm {path}) to start this peer's IPAM afresh; "
                            f"then run weave-fdp rmpeer for this peer's old name on another peer if it owned space")


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < (1 << 62)


def decode(data: bytes, path: str = "ipam.bin") -> dict[str, Any]:
    if len(data) < HEADER.size:
        raise _fail(path, "truncated header")
    magic, fmt, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _fail(path, "not an IPAM state file")
    if fmt != FORMAT:
        raise _fail(path, f"format {fmt}, this version reads {FORMAT}")
    body = data[HEADER.size:]
    if zlib.crc32(body) != crc:
        raise _fail(path, "checksum mismatch: truncated or altered")
    try:
        snap = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise _fail(path, f"undecodable: {exc}") from None
    try:
        _check(snap)
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise _fail(path, f"malformed content: {exc!r}") from None
    return snap


def _check(s: Any) -> None:
    assert isinstance(s, dict)
    r = s["range"]
    assert isinstance(r, list) and len(r) == 2 and all(_is_uint(x) for x in r) and r[0] < r[1]
    assert isinstance(s["seeds"], list) and all(isinstance(p, str) for p in s["seeds"])
    last = -1
    for e in s["ring"]:
        assert isinstance(e, list) and len(e) == 4 and _is_uint(e[0]) and isinstance(e[1], str)
        assert _is_uint(e[2]) and _is_uint(e[3]) and r[0] <= e[0] < r[1] and e[0] > last
        last = e[0]
    px = s["paxos"]
    assert isinstance(px, list) and len(px) == 3
    for b in px[:2]:
        assert isinstance(b, list) and len(b) == 2 and _is_uint(b[0]) and isinstance(b[1], str)
    assert all(isinstance(p, str) for p in px[2])
    for key in ("allocs", "claims"):
        assert isinstance(s[key], dict)
        for a, ident in s[key].items():
            assert isinstance(a, str) and a.isdigit() and isinstance(ident, str)
