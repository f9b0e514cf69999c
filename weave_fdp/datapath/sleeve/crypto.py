"""Per-packet sealing of sleeve datagrams (secretbox) with a replay window.

Keys: one per direction, ``SHA-256(label ‖ secret ‖ from ‖ to)``, so the two
directions of a connection never share a (key, nonce) pair and a datagram whose
clear sender name was forged fails to open. ``secret`` is the connection's
session key when the router provides one, else password material (see
``weave_fdp.router.overlay.sleeve``). Nonce = 16 zero bytes ‖ 64-bit sequence
number; every sender counts from 1 per key, so a key must be fresh per
connection incarnation (the router's session key is; the password fallback mixes
in nonces both ends exchange).
"""

from __future__ import annotations

import hashlib
import itertools
import threading

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from weave_fdp.datapath.sleeve import wire

LABEL = b"weave-fdp sleeve v1"
NONCE_PAD = bytes(16)
WINDOW = 1024          # sequence numbers tracked behind the highest seen (reordering tolerated)


def direction_key(secret: bytes, frm: bytes, to: bytes) -> bytes:
    """The 32-byte key for datagrams from ``frm`` to ``to`` (6-byte peer names)."""
    return hashlib.sha256(LABEL + secret + frm + to).digest()


class ReplayWindow:
    """RFC 4303-style sliding window over 64-bit sequence numbers.

    ``check`` says whether a number may be accepted; ``commit`` records it and is
    called only after the datagram authenticated, so forged packets cannot move
    the window.
    """

    def __init__(self, size: int = WINDOW) -> None:
        self.size = size
        self.top = 0         # highest accepted sequence number
        self.bits = 0        # bit i set: top - i was accepted
        self._lock = threading.Lock()

    def check(self, seq: int) -> str | None:
        """None when ``seq`` is acceptable, else the drop cause."""
        if seq == 0:
            return "replay"          # senders start at 1
        if seq > self.top:
            return None
        diff = self.top - seq
        if diff >= self.size:
            return "too old"
        return "replay" if (self.bits >> diff) & 1 else None

    def commit(self, seq: int) -> bool:
        """Record ``seq``; False if it became a replay meanwhile (another thread)."""
        with self._lock:
            if self.check(seq) is not None:
                return False
            if seq > self.top:
                shift = seq - self.top
                self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
                self.top = seq
            else:
                self.bits |= 1 << (self.top - seq)
            return True


class Sealer:
    """Seals datagrams from the local peer to one remote peer."""

    def __init__(self, secret: bytes, local: bytes, remote: bytes) -> None:
        self.key = direction_key(secret, local, remote)
        self.header = wire.encode_header(local, sealed=True)
        self._seq = itertools.count(1)   # next() is atomic under the GIL: threads share it

    def seal(self, body: bytes) -> bytes:
        seq = next(self._seq)
        s = wire.SEQ.pack(seq)
        return self.header + s + crypto_secretbox(body, NONCE_PAD + s, self.key)


class Opener:
    """Opens datagrams from one remote peer to the local peer."""

    def __init__(self, secret: bytes, local: bytes, remote: bytes) -> None:
        self.key = direction_key(secret, remote, local)
        self.window = ReplayWindow()

    def open(self, buf: bytes | memoryview, hdr: wire.Header) -> bytes:
        """The body of a sealed datagram; raises WireError with the drop cause."""
        cause = self.window.check(hdr.seq)
        if cause:
            raise wire.WireError(cause, f"sequence number {hdr.seq} refused ({cause})")
        nonce = NONCE_PAD + bytes(buf[wire.HEADER.size:hdr.body_offset])
        try:
            body = crypto_secretbox_open(bytes(buf[hdr.body_offset:]), nonce, self.key)
        except CryptoError:
            raise wire.WireError("auth failed", "datagram failed authentication (forged, corrupted or wrong key)") from None
        if not self.window.commit(hdr.seq):
            raise wire.WireError("replay", f"sequence number {hdr.seq} refused (replay)")
        return body
