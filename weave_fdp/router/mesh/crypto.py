"""Session crypto of a control connection (PyNaCl).

Key: X25519 shared secret of the two ephemeral keys, then
``SHA-256(shared || password)`` so both the key exchange and the password must
match. Each direction uses implicit nonces: an 8-byte big-endian sequence number
and a direction byte (0 for the side with the smaller public key), so no nonce is
ever sent, reused, or accepted out of order (a replayed or dropped frame fails).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from weave_fdp.errors import ProtocolError

NONCE_SIZE = SecretBox.NONCE_SIZE  # 24
MAC_SIZE = SecretBox.MACBYTES      # 16


class KeyPair:
    """Ephemeral X25519 key pair for one connection."""

    def __init__(self) -> None:
        self._sk = PrivateKey.generate()
        self.public = bytes(self._sk.public_key)

    def session_key(self, remote_public: bytes, password: bytes) -> bytes:
        try:
            shared = crypto_scalarmult(bytes(self._sk), remote_public)
        except CryptoError as exc:   # libsodium refuses low-order points (an all-zero shared secret)
            raise ProtocolError("hello: the peer's public key is a low-order point (no shared secret)") from exc
        return hashlib.sha256(shared + password).digest()


def _nonce(seq: int, direction: int) -> bytes:
    return struct.pack("!QB", seq, direction) + bytes(NONCE_SIZE - 9)


class SessionCipher:
    """Seals outgoing and opens incoming plaintexts of one connection."""

    def __init__(self, key: bytes, local_public: bytes, remote_public: bytes) -> None:
        if local_public == remote_public:
            raise ProtocolError("peer echoed our public key")
        self._box = SecretBox(key)
        self._key = key
        self._tx_dir = 0 if local_public < remote_public else 1
        self._tx_seq = 0
        self._rx_seq = 0

    def export(self, label: bytes) -> bytes:
        """A 32-byte secret for another use of this session (e.g. ESP keys), bound to
        ``label``: HMAC-SHA256(session key, label). One-way, so the session key itself
        never leaves this object; a new connection has a new session key, hence new
        exported secrets."""
        return hmac.new(self._key, label, hashlib.sha256).digest()

    def seal(self, plaintext: bytes) -> bytes:
        ct = self._box.encrypt(plaintext, _nonce(self._tx_seq, self._tx_dir)).ciphertext
        self._tx_seq += 1
        return ct

    def open(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < MAC_SIZE:
            raise ProtocolError("sealed frame shorter than its MAC")
        try:
            pt = self._box.decrypt(ciphertext, _nonce(self._rx_seq, 1 - self._tx_dir))
        except CryptoError as exc:
            raise ProtocolError("could not decrypt frame (password mismatch or tampering)") from exc
        self._rx_seq += 1
        return pt
