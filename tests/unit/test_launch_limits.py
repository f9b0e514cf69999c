"""Launch flags with a wire limit are refused at launch with one clear line, never sent to peers
that would refuse every handshake; the largest accepted values still fit the handshake."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.cli.main import main
from weave_fdp.errors import ExitCode, UsageError
from weave_fdp.router.config import RouterConfig, parse_peer_address
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.crypto import MAC_SIZE


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    return int(ei.value.code or 0), capsys.readouterr().err


def _largest_features(nickname: str) -> codec.Features:
    return codec.Features(name="7e:ff:ff:ff:ff:ff", nickname=nickname, uid=2 ** 64 - 1, incarnation=2 ** 64 - 1,
                          short_id=4095, conn_id=2 ** 64 - 1, overlays=("fastdp", "sleeve"), trusted=True,
                          port=65535, version="9" * 32)


def test_overlong_nickname_fails_launch_with_usage_error(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from weave_fdp.cli.commands import router as router_cmd

    def must_not_start(*_a: object, **_kw: object) -> None:
        raise AssertionError("launch started a router with a nickname the peers would refuse")

    # this test must never start a real router in the test runner's namespace
    monkeypatch.setattr(router_cmd, "_launch_background", must_not_start)
    monkeypatch.setattr(router_cmd.RouterClient, "running", lambda self: False)
    code, err = _run_main(["launch", "--nickname", "n" * 1100], capsys)
    assert code == ExitCode.USAGE
    assert err.startswith("error: --nickname is 1100 bytes long") and err.count("\n") == 1, err


@pytest.mark.parametrize("nick,why", [("", "is empty"), ("a\nb", "control characters"),
                                      ("é" * 128, "256 bytes long")])
def test_bad_nicknames_are_named(nick: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        RouterConfig(nickname=nick).validate()


@given(st.text(min_size=1, max_size=300))
def test_every_accepted_nickname_fits_a_sealed_features_frame(nick: str) -> None:
    if codec.nickname_problem(nick) is not None:
        return
    plain = codec.encode_features(_largest_features(nick))
    assert len(plain) + MAC_SIZE <= codec.MAX_HELLO
    assert codec.decode_features(plain).nickname == nick


def test_largest_nickname_of_four_byte_characters_fits() -> None:
    nick = "\U0001F600" * (codec.MAX_NICKNAME_BYTES // 4)
    assert codec.nickname_problem(nick) is None
    assert len(codec.encode_features(_largest_features(nick))) + MAC_SIZE <= codec.MAX_HELLO


def test_overlong_peer_host_is_refused() -> None:
    with pytest.raises(UsageError, match="254 characters"):
        parse_peer_address("a" * 254)
    assert parse_peer_address("a" * 253 + ":6790") == ("a" * 253, 6790)
