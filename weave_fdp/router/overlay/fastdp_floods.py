"""Floods across overlays: which sources' floods must go on by sleeve, and the "floods" message.

A frame that arrives by fastdp is re-flooded by the kernel to fastdp hops only;
one that arrives by sleeve is relayed by the sleeve to every hop. So when a hop
on a source's broadcast tree from here is on sleeve (or said the same of that
source), this host tells its fastdp neighbours, and they send that source's
floods to us by sleeve (``switch.flood_overlay``). Pure: no sockets, no time.

Message (overlay control, msgpack map): ``{"o": "fastdp", "t": "floods",
"s": [source peer names], "esp": bool}``; ``esp`` says this host can put
fastdp in IPsec ESP. Anything else is not ours and is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import msgpack

from weave_fdp.datapath.fastdp.abi import MAX_PEERS

MAX_SOURCES = MAX_PEERS   # a mesh has no more sources than peers


@dataclass(frozen=True)
class FloodsMessage:
    esp: bool                          # the sender can put fastdp in ESP
    sources: frozenset[str] | None     # None: the list was malformed (the esp flag still counts)


def encode(sources: Collection[str], esp: bool) -> bytes:
    return msgpack.packb({"o": "fastdp", "t": "floods", "s": sorted(sources), "esp": esp})


def decode(payload: bytes) -> FloodsMessage | None:
    """The floods message in ``payload``; None when it is some other overlay's (or garbage)."""
    try:
        msg = msgpack.unpackb(payload, raw=False)
    except Exception:
        return None
    if not isinstance(msg, dict) or msg.get("o") != "fastdp" or msg.get("t") != "floods":
        return None
    srcs = msg.get("s")
    ok = isinstance(srcs, list) and len(srcs) <= MAX_SOURCES and all(isinstance(x, str) for x in srcs)
    return FloodsMessage(esp=msg.get("esp") is True, sources=frozenset(srcs) if ok else None)


def needs_sleeve(broadcast: Mapping[str, list[str]], established: Collection[str],
                 mode: Callable[[str], str], told: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Sources whose floods, reaching this host, must go on over a sleeve connection: a hop
    on their tree from here (an established connection) is on sleeve, or said the same of them."""
    out = set()
    for src, hops in broadcast.items():
        for h in hops:
            if h in established and (mode(h) == "sleeve" or src in told.get(h, frozenset())):
                out.add(src)
                break
    return frozenset(out)


def kernel_hops(broadcast: Mapping[str, list[str]], conns: Collection[str], local: str,
                floods_by_sleeve: Callable[[str], bool]) -> dict[str, list[str]]:
    """The broadcast trees as the kernel follows them: hops with an established connection,
    and of this host's own tree only the hops its floods reach by fastdp."""
    return {s: [h for h in hs if h in conns and (s != local or not floods_by_sleeve(h))]
            for s, hs in broadcast.items()}


class FloodBook:
    """What each neighbour told us (``told``) and what we last told it (``sent``)."""

    def __init__(self) -> None:
        self.told: dict[str, frozenset[str]] = {}
        self.sent: dict[str, frozenset[str]] = {}

    def forget(self, established: Collection[str]) -> None:
        """Forget neighbours whose connection is gone (a new one is told afresh)."""
        for d in (self.told, self.sent):
            for peer in [p for p in d if p not in established]:
                del d[peer]

    def relays_into_sleeve(self, peer: str, source: str) -> bool:
        """``peer`` said it relays floods of ``source`` into sleeve."""
        return source in self.told.get(peer, frozenset())

    def to_send(self, peer: str, need: frozenset[str]) -> bool:
        """Whether ``peer`` must be told ``need`` (it was not, or was told something else)."""
        return self.sent.get(peer) != need

    def heard(self, peer: str, sources: frozenset[str]) -> bool:
        """Note what ``peer`` told us; True when it changed."""
        if self.told.get(peer) == sources:
            return False
        self.told[peer] = sources
        return True
