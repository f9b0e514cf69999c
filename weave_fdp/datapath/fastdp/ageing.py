"""MAC ageing of the fastdp MAC table, decided here, applied by ``loader.FastDatapath.age_macs``.

Like a Linux bridge (default ageing time 300 s): the kernel side refreshes a
learned entry's ``updated_ns`` whenever a frame from that MAC arrives (at most
once per ``abi.MAC_REFRESH_NS``, see ``fdp_learn`` in bpf/lib/forward.h), and a
periodic sweep deletes learned entries not seen for the ageing time. Local
entries (containers attached on this host) never age: attach/detach own them.
A frame to an aged-out MAC is flooded along the broadcast tree and the reply
learns the MAC again, so ageing only costs one flood per idle MAC.

Pure (no kernel access): the unit tests drive it with made-up entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from weave_fdp.datapath.fastdp import abi
from weave_fdp.errors import UsageError

#: the router's default, as ``brctl``'s/``ip link ... ageing_time``
DEFAULT_AGEING_S = float(abi.MAC_AGEING_S)
#: ageing shorter than the kernel's refresh period would expire busy entries
MIN_AGEING_S = 2 * abi.MAC_REFRESH_NS / 1e9


@dataclass(frozen=True)
class MacSeen:
    """One entry of the MAC table as the sweep needs it."""

    mac: str
    flags: int
    updated_ns: int


def check_ageing(seconds: float) -> float:
    """``seconds`` as an ageing time, or a UsageError naming the bounds."""
    if not MIN_AGEING_S <= seconds <= 1e6:
        raise UsageError(f"MAC ageing time {seconds:g} s out of range",
                         fix=f"use {MIN_AGEING_S:g}..1000000 seconds (default {DEFAULT_AGEING_S:g})")
    return float(seconds)


def stale(entries: Iterable[MacSeen], now_ns: int, ageing_s: float) -> list[str]:
    """MACs of learned entries last seen more than ``ageing_s`` before ``now_ns`` (sorted).

    An entry stamped in the future (another clock, a test) is not stale; one with
    no stamp (0: written by hand) counts as seen at boot, so it ages like any other.
    """
    limit = int(ageing_s * 1e9)
    out = []
    for e in entries:
        if e.flags & abi.MacFlags.LOCAL or not e.flags & abi.MacFlags.LEARNED:
            continue
        if now_ns - e.updated_ns > limit:
            out.append(e.mac)
    return sorted(out)
