"""Why the sleeve drops a packet: a closed set of named reasons, counted, logged rate-limited.

The names follow fastdp's (``bpf/fdp_abi.h`` ``enum fdp_drop_reason``, shown by
``datapath/fastdp/abi.DROP_NAMES``): the member in upper snake case, the name shown
in reports and Prometheus labels in lower case with hyphens; where a reason means what
a fastdp one means, it has the same name. The set is closed, so the ``reason`` label
of ``weave_fdp_drops_total`` has a bounded number of values: details (an errno, a peer,
an address) go to the log, never into the name. The report merges the sleeve's drops
into fastdp's as ``sleeve-<name>`` (``flows.merge_datapath``).
"""

from __future__ import annotations

import logging
from collections import Counter
from enum import Enum

from weave_fdp.ratelog import RateLimitedLog

log = logging.getLogger("weave_fdp.sleeve")

LOG_INTERVAL = 60.0     # s: each reason is logged at most once per interval (the rest only counted)


class SleeveDrop(str, Enum):
    """A named drop reason; the value is the name reports show (it compares equal to it)."""

    # decoding (wire.py): the datagram is not one we can read
    TRUNCATED = "truncated"              # shorter than the headers it announces
    BAD_LENGTH = "bad-length"            # a length field that disagrees with the datagram
    BAD_VERSION = "bad-version"          # a wire version this sleeve does not speak
    BAD_FLAGS = "bad-flags"              # unknown header or entry flags
    BAD_TYPE = "bad-type"                # unknown body type
    EMPTY = "empty"                      # a body with nothing in it
    RUNT = "runt"                        # a frame shorter than an Ethernet header
    BAD_FRAGMENT = "bad-fragment"        # fragments or pieces of one frame disagree (total, overlap)
    REASSEMBLY_TIMEOUT = "reassembly-timeout"   # a fragmented frame or pieced datagram never completed
    # who sent it (link.py, crypto.py)
    UNKNOWN_SENDER = "unknown-sender"    # the header names a peer that is no neighbour of ours
    WRONG_SOURCE = "wrong-source"        # it names a neighbour but came from another address
    UNSEALED = "unsealed"                # plain data from a neighbour whose connection must be sealed
    SEALED_WITHOUT_PASSWORD = "sealed-without-password"   # sealed data, but no password is set here
    AUTH_FAILED = "auth-failed"          # the authenticator does not verify (forged, corrupted, wrong key)
    REPLAY = "replay"                    # a sequence number already accepted
    TOO_OLD = "too-old"                  # a sequence number left of the replay window
    SEAL_FAILED = "seal-failed"          # sealing refused its input (a bug, or no cipher)
    # where it goes (decide.py)
    NO_ROUTE = "no-route"                # no next hop toward the destination peer
    UNKNOWN_PEER = "unknown-peer"        # a relayed entry names a destination peer not in the mesh
    ROUTING_LOOP = "routing-loop"        # the next hop is the neighbour it came from
    TTL_EXCEEDED = "ttl-exceeded"        # relayed too often (a loop during route churn)
    NOT_SLEEVE = "not-sleeve"            # the next hop has no sleeve link
    # the ways out and in (state.py, transmit.py, receive.py)
    SEND_QUEUE_FULL = "send-queue-full"  # the UDP socket's send buffer is full
    TOO_BIG = "too-big"                  # a datagram larger than the path takes (EMSGSIZE)
    BIG_UNSPLIT = "big-unsplit"          # a frame over 64 KiB for a peer that takes none, and no IPv4/TCP
                                         # super-frame to cut into smaller ones
    SEND_ERROR = "send-error"            # any other error of sendmsg (errno in the log)
    INJECT_QUEUE_FULL = "inject-queue-full"   # the bridge port's send buffer is full
    INJECT_ERROR = "inject-error"        # any other error writing to the bridge port (errno in the log)
    CAPTURE_ERROR = "capture-error"      # reading the bridge port failed
    RECEIVE_ERROR = "receive-error"      # reading the UDP socket failed
    CAPTURE_BUG = "capture-bug"          # a captured frame raised (a bug: traceback at debug level)
    RECEIVE_BUG = "receive-bug"          # a received datagram raised (a bug: traceback at debug level)
    # events, not drops: counted under the same scheme
    PMTU_UNANSWERED = "pmtu-unanswered"  # a peer answers heartbeats but none of our PMTU probes

    def __str__(self) -> str:
        return self.value


class Drops:
    """``drop(reason, detail)`` counts by reason; each reason is logged (with its detail)
    at most once per ``LOG_INTERVAL``, never per packet."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.counts: Counter[SleeveDrop] = Counter()
        self._log = RateLimitedLog(log, interval)

    def drop(self, reason: SleeveDrop, detail: str = "") -> None:
        self.counts[reason] += 1
        self._log.warning(reason.value, "sleeve: dropped a packet: %s%s", reason.value,
                          f": {detail}" if detail else "")

    def set(self, reason: SleeveDrop, count: int) -> None:
        """A count kept elsewhere (reassembly timeouts, counted by the assemblers)."""
        self.counts[reason] = count

    def snapshot(self) -> dict[str, int]:
        return {r.value: n for r, n in self.counts.items()}
