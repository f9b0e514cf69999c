"""Encrypted fastdp: the IPsec ESP security associations of one connection (pure).

Where the kernel has ESP, the VXLAN packets (UDP 6784) between two peers ride in
ESP transport mode, AEAD ``rfc4106(gcm(aes))`` (AES-128-GCM, 16-byte ICV). Each
direction has its own key and SPI, derived from the control connection's session
key (X25519 + password, see ``router/mesh/crypto.py``) through its exporter::

    secret      = HMAC-SHA256(session key, "weave-fdp esp v1")       (SessionCipher.export)
    key(A->B)   = HMAC-SHA256(secret, "key" | 0 | A | 0 | B)[:20]    AES-128 key + 4-byte salt
    spi(A->B)   = 0x100 + HMAC-SHA256(secret, "spi" | 0 | A | 0 | B)[:4] mod (2^32 - 0x100)

A and B are the sending and the receiving peer's names, so both ends compute the
same pair without sending anything, every connection (a reconnect, a restart: new
X25519 keys) gets new keys and SPIs, and the two directions never share a key
(GCM must never see one nonce twice under one key; each direction's sequence
numbers start at 1 again with every new SA). SPIs 1-255 are reserved (RFC 4303).

Nothing here touches the kernel: ``plumbing/xfrm.py`` installs what this computes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

#: AEAD of the SAs, as the kernel names it
AEAD = "rfc4106(gcm(aes))"
#: bytes of key material: 16 (AES-128) + 4 (salt, RFC 4106 section 8.1)
KEY_BYTES = 20
#: bits of the integrity check value
ICV_BITS = 128
#: label of the session key's exporter (SessionCipher.export)
EXPORT_LABEL = b"weave-fdp esp v1"
#: the first SPI we may use (1-255 are reserved by IANA)
SPI_MIN = 0x100
SPI_SPAN = 2**32 - SPI_MIN


@dataclass(frozen=True)
class EspSa:
    """One direction: packets from ``src`` to ``dst`` (underlay IPv4) under ``spi`` and ``key``."""

    src: str
    dst: str
    spi: int
    key: bytes

    def __repr__(self) -> str:   # never print a key
        return f"EspSa({self.src} -> {self.dst}, spi=0x{self.spi:08x})"


@dataclass(frozen=True)
class EspPair:
    """Both directions of one connection, seen from the local peer."""

    out: EspSa
    inb: EspSa

    @property
    def local_ip(self) -> str:
        return self.out.src

    @property
    def remote_ip(self) -> str:
        return self.out.dst


def _label(kind: bytes, sender: str, receiver: str) -> bytes:
    return kind + b"\0" + sender.encode() + b"\0" + receiver.encode()


def direction(secret: bytes, sender: str, receiver: str) -> tuple[int, bytes]:
    """(SPI, key) of the packets ``sender`` sends to ``receiver`` (peer names)."""
    if len(secret) < 32:
        raise ValueError("the ESP secret must be 32 bytes (SessionCipher.export)")
    if sender == receiver:
        raise ValueError("a peer has no ESP association with itself")
    key = hmac.new(secret, _label(b"key", sender, receiver), hashlib.sha256).digest()[:KEY_BYTES]
    raw = hmac.new(secret, _label(b"spi", sender, receiver), hashlib.sha256).digest()[:4]
    return SPI_MIN + int.from_bytes(raw, "big") % SPI_SPAN, key


def derive(secret: bytes, local: str, remote: str, local_ip: str, remote_ip: str) -> EspPair:
    """The SAs of the connection between peer ``local`` (at ``local_ip``) and ``remote``."""
    spi_out, key_out = direction(secret, local, remote)
    spi_in, key_in = direction(secret, remote, local)
    return EspPair(EspSa(local_ip, remote_ip, spi_out, key_out), EspSa(remote_ip, local_ip, spi_in, key_in))
