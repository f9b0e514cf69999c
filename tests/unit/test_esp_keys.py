"""ESP key and SPI derivation of encrypted fastdp (weave_fdp.datapath.esp): pure, both ends agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath import esp
from weave_fdp.router.mesh.crypto import KeyPair, SessionCipher

names = st.text(alphabet="0123456789abcdef:", min_size=1, max_size=17)
secrets = st.binary(min_size=32, max_size=32)


def session_pair(password: bytes = b"s3cret") -> tuple[SessionCipher, SessionCipher]:
    """The two ends of one control connection, as the handshake makes them."""
    a, b = KeyPair(), KeyPair()
    return (SessionCipher(a.session_key(b.public, password), a.public, b.public),
            SessionCipher(b.session_key(a.public, password), b.public, a.public))


@settings(max_examples=200)
@given(secrets, names, names)
def test_both_ends_derive_mirrored_pairs(secret: bytes, a: str, b: str) -> None:
    if a == b:
        return
    pa = esp.derive(secret, a, b, "192.0.2.1", "192.0.2.2")
    pb = esp.derive(secret, b, a, "192.0.2.2", "192.0.2.1")
    assert pa.out == pb.inb and pa.inb == pb.out
    assert pa.out.key != pa.inb.key and pa.out.spi != pa.inb.spi
    for sa in (pa.out, pa.inb):
        assert esp.SPI_MIN <= sa.spi < 2**32 and len(sa.key) == esp.KEY_BYTES


def test_connections_get_new_keys_and_spis() -> None:
    """A reconnect (new X25519 keys) rekeys: nothing of the old SAs is reused."""
    first = [esp.derive(c.export(esp.EXPORT_LABEL), "a", "b", "192.0.2.1", "192.0.2.2") for c in session_pair()]
    second = esp.derive(session_pair()[0].export(esp.EXPORT_LABEL), "a", "b", "192.0.2.1", "192.0.2.2")
    assert first[0] == first[1]   # both ends of one connection agree (as "a")
    assert {second.out.key, second.inb.key}.isdisjoint({first[0].out.key, first[0].inb.key})
    assert {second.out.spi, second.inb.spi}.isdisjoint({first[0].out.spi, first[0].inb.spi})


def test_export_depends_on_label_and_password() -> None:
    a, b = session_pair()
    assert a.export(b"x") == b.export(b"x") and a.export(b"x") != a.export(b"y")
    c, _ = session_pair(b"other")
    assert c.export(b"x") != a.export(b"x")
    assert len(a.export(esp.EXPORT_LABEL)) == 32


def test_known_vector() -> None:
    """The derivation is a wire contract between two routers: pinned."""
    pair = esp.derive(bytes(range(32)), "aa:00:00:00:00:01", "aa:00:00:00:00:02", "10.0.0.1", "10.0.0.2")
    again = esp.direction(bytes(range(32)), "aa:00:00:00:00:01", "aa:00:00:00:00:02")
    assert (pair.out.spi, pair.out.key) == again
    assert pair.out.spi == 0x1011D085 and pair.inb.spi == 0xD3CB363C
    assert pair.out.key.hex() == "5be78b511b3408f902fd704fdcf935c245a39e99"
    assert pair.out.src == pair.local_ip == "10.0.0.1" and pair.remote_ip == "10.0.0.2"
    assert "key" not in repr(pair.out).lower().replace("esp", "")


def test_bad_inputs_refused() -> None:
    with pytest.raises(ValueError):
        esp.direction(b"short", "a", "b")
    with pytest.raises(ValueError):
        esp.direction(bytes(32), "a", "a")
