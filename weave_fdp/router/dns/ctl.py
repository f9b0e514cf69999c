"""The control channel between the router and its DNS server process (pure codec).

A stream (a Unix socketpair) of frames: a 4-byte big-endian length, then a msgpack map
with a type ``t``. Router to server: ``snap`` (a new snapshot of the records). Server to
router: ``fwd`` (a question for the upstream resolvers, answered by the router through
its copy of the UDP socket) and ``stats`` (the server's counters, every STATS_EVERY_S).

Both ends are one program's two halves, started together, so there is no versioning:
a frame that does not decode is a bug, and the reader stops (the router restarts the
server process; the server process exits).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from weave_fdp.router.dns.snapshot import Snapshot

LEN = struct.Struct("!I")
MAX_FRAME = 64 << 20        # bytes: far above any snapshot (a million names is ~40 MB)
STATS_EVERY_S = 0.25


class CtlError(ValueError):
    """A frame that does not decode (a bug on the other side)."""


def frame(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return LEN.pack(len(body)) + body


def snap_msg(s: Snapshot) -> dict[str, Any]:
    return {"t": "snap", "g": s.generation, "n": {k: list(v) for k, v in s.names.items()},
            "p": sorted(s.parents), "o": s.owners}


def snapshot_of(msg: dict[str, Any]) -> Snapshot:
    try:
        return Snapshot(int(msg["g"]), {str(k): tuple(str(a) for a in v) for k, v in msg["n"].items()},
                        frozenset(str(p) for p in msg["p"]), {str(k): str(v) for k, v in msg["o"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CtlError(f"bad snapshot frame: {exc!r}") from exc


class Reader:
    """Frames from a byte stream fed in pieces (``feed`` returns the complete ones)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out = []
        while len(self._buf) >= LEN.size:
            (n,) = LEN.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise CtlError(f"frame of {n} bytes")
            if len(self._buf) < LEN.size + n:
                break
            body = bytes(self._buf[LEN.size:LEN.size + n])
            del self._buf[:LEN.size + n]
            try:
                msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException) as exc:
                raise CtlError(f"frame does not decode: {exc!r}") from exc
            if not isinstance(msg, dict) or "t" not in msg:
                raise CtlError("frame is not a typed map")
            out.append(msg)
        return out
