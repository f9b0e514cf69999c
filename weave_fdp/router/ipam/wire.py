"""IPAM's messages on the mesh's ``ipam`` gossip channel (docs/IPAM.md, "Messages").

Every payload is one msgpack map with ``v`` (version, 1) and ``k`` (kind):

- ``s`` state (periodic gossip, broadcast after a change, unicast on a new connection):
  ``r`` [lo, hi] range, ``sd`` [peer...] founders of the ring, ``e`` [[token, peer, version,
  free]...] ring entries, ``px`` {peer: [promise round, promise peer, accepted round, accepted
  peer, [value peer...]]} consensus claims (only while no ring exists), ``w`` true when the
  sender waits for consensus, ``c`` [address...] addresses the sender claims in others' space.
- ``w`` want space: ``n`` [lo, hi] the subnet the sender has no free address in.
- ``n`` no space: ``n`` [lo, hi], the answer of a peer with nothing to give in that subnet.
- ``c`` claim: ``a`` one address in the receiver's space that the sender was told to use.
- ``x`` claim refused: ``a`` address, ``y`` why.
- ``h`` handoff: the sender leaves and gave the receiver its space; ``s`` its state map.
- ``k`` handoff acknowledged.

Peers go on the wire as 6 bytes (their MAC-form names). Decoding is defensive: bounded
sizes, types checked, unknown versions and kinds refused with ``ProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from weave_fdp.errors import ProtocolError
from weave_fdp.router.ipam.addr import Range
from weave_fdp.router.ipam.paxos import Claims

VERSION = 1
MAX_PAYLOAD = 4 << 20      # bytes
MAX_ENTRIES = 1 << 16      # ring entries in one message
MAX_CLAIMS = 4096
KINDS = ("s", "w", "n", "c", "x", "h", "k")


def peer_bytes(name: str) -> bytes:
    b = bytes.fromhex(name.replace(":", ""))
    if len(b) != 6:
        raise ValueError(f"peer name {name!r} is not 6 bytes")
    return b


def peer_name(b: Any) -> str:
    if not isinstance(b, bytes) or len(b) != 6:
        raise ProtocolError("ipam: a peer is not 6 bytes")
    return ":".join(f"{x:02x}" for x in b)


@dataclass
class State:
    range: Range
    seeds: tuple[str, ...]
    entries: list[tuple[int, str, int, int]]
    paxos: dict[str, Claims] | None = None
    want: bool = False
    claims: list[int] = field(default_factory=list)


def _ballot(b: tuple[int, str]) -> list[Any]:
    return [b[0], peer_bytes(b[1]) if b[1] else b""]


def state_map(s: State) -> dict[str, Any]:
    m: dict[str, Any] = {"r": list(s.range), "sd": [peer_bytes(p) for p in s.seeds],
                         "e": [[t, peer_bytes(p), v, f] for t, p, v, f in s.entries]}
    if s.paxos is not None:
        m["px"] = {peer_bytes(n): [*_ballot(c.promise), *_ballot(c.accepted), [peer_bytes(p) for p in c.value]]
                   for n, c in s.paxos.items()}
    if s.want:
        m["w"] = True
    if s.claims:
        m["c"] = list(s.claims)
    return m


def encode(kind: str, **body: Any) -> bytes:
    assert kind in KINDS
    if kind in ("s", "h") and isinstance(body.get("s"), State):
        st = state_map(body.pop("s"))
        if kind == "s":
            return msgpack.packb({"v": VERSION, "k": kind, **st}, use_bin_type=True)
        body["s"] = st
    return msgpack.packb({"v": VERSION, "k": kind, **body}, use_bin_type=True)


def _uint(x: Any, what: str, limit: int = 1 << 32) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= limit:
        raise ProtocolError(f"ipam: {what} is not an integer in 0..{limit}")
    return x


def _range(x: Any) -> Range:
    if not isinstance(x, list) or len(x) != 2:
        raise ProtocolError("ipam: a range is not [lo, hi]")
    lo, hi = _uint(x[0], "range start"), _uint(x[1], "range end")
    if lo >= hi:
        raise ProtocolError("ipam: an empty range")
    return lo, hi


def _ballot_of(r: Any, p: Any) -> tuple[int, str]:
    r = _uint(r, "ballot round", 1 << 62)
    return (r, peer_name(p)) if p else (0, "")


def _state(m: dict[str, Any]) -> State:
    entries_raw = m.get("e", [])
    if not isinstance(entries_raw, list) or len(entries_raw) > MAX_ENTRIES:
        raise ProtocolError("ipam: ring entries are not a bounded list")
    entries = []
    last = -1
    for e in entries_raw:
        if not isinstance(e, list) or len(e) != 4:
            raise ProtocolError("ipam: a ring entry is not [token, peer, version, free]")
        t = _uint(e[0], "token")
        if t <= last:
            raise ProtocolError("ipam: ring tokens are not sorted")
        last = t
        entries.append((t, peer_name(e[1]), _uint(e[2], "version", 1 << 62), _uint(e[3], "free count")))
    seeds_raw = m.get("sd", [])
    if not isinstance(seeds_raw, list) or len(seeds_raw) > MAX_CLAIMS:
        raise ProtocolError("ipam: seeds are not a list")
    px = None
    if "px" in m:
        if not isinstance(m["px"], dict) or len(m["px"]) > MAX_CLAIMS:
            raise ProtocolError("ipam: consensus claims are not a map")
        px = {}
        for n, c in m["px"].items():
            if not isinstance(c, list) or len(c) != 5 or not isinstance(c[4], list) or len(c[4]) > MAX_CLAIMS:
                raise ProtocolError("ipam: consensus claims of a peer are malformed")
            px[peer_name(n)] = Claims(_ballot_of(c[0], c[1]), _ballot_of(c[2], c[3]),
                                      tuple(peer_name(p) for p in c[4]))
    claims = m.get("c", [])
    if not isinstance(claims, list) or len(claims) > MAX_CLAIMS:
        raise ProtocolError("ipam: claims are not a bounded list")
    return State(_range(m.get("r")), tuple(peer_name(p) for p in seeds_raw), entries, px,
                 bool(m.get("w", False)), [_uint(a, "claimed address") for a in claims])


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, body) with ``body["s"]`` a State for kinds s and h; ProtocolError on anything else."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_PAYLOAD:
        raise ProtocolError("ipam: payload is not bytes or too long")
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                            max_bin_len=MAX_PAYLOAD, max_str_len=4096, max_array_len=MAX_ENTRIES * 4,
                            max_map_len=MAX_CLAIMS * 2)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise ProtocolError(f"ipam: undecodable payload: {exc}") from None
    if not isinstance(m, dict):
        raise ProtocolError("ipam: payload is not a map")
    if m.get("v") != VERSION:
        raise ProtocolError(f"ipam: message version {m.get('v')!r} is not {VERSION}; upgrade the older peer")
    kind = m.get("k")
    if kind not in KINDS:
        raise ProtocolError(f"ipam: unknown message kind {kind!r}")
    if kind == "s":
        return kind, {"s": _state(m)}
    if kind == "h":
        if not isinstance(m.get("s"), dict):
            raise ProtocolError("ipam: handoff without state")
        return kind, {"s": _state(m["s"])}
    if kind in ("w", "n"):
        return kind, {"n": _range(m.get("n"))}
    if kind in ("c", "x"):
        body: dict[str, Any] = {"a": _uint(m.get("a"), "address")}
        if kind == "x":
            y = m.get("y")
            body["y"] = y[:300] if isinstance(y, str) else "refused"
        return kind, body
    return kind, {}
