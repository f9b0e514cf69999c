"""Per-host paths and the typed error hierarchy."""

from __future__ import annotations

from pathlib import Path

import pytest

from weave_fdp import errors, paths


def test_paths_are_keyed_by_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVE_FDP_HOST", "lab-h1")
    monkeypatch.delenv("WEAVE_FDP_STATE_DIR", raising=False)
    monkeypatch.delenv("WEAVE_FDP_RUNTIME_DIR", raising=False)
    assert paths.state_dir() == paths.STATE_ROOT / "lab-h1"
    assert paths.runtime_dir() == paths.RUNTIME_ROOT / "lab-h1"
    assert paths.bpf_pin_dir() == paths.BPFFS_ROOT / "lab-h1"


def test_explicit_state_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEAVE_FDP_STATE_DIR", str(tmp_path))
    assert paths.state_dir() == tmp_path


def test_api_socket_is_abstract() -> None:
    assert paths.api_socket_name().startswith("\0")


def test_error_message_carries_fix_and_code() -> None:
    exc = errors.NotFound("namespace web1 does not exist", fix="create it with: ip netns add web1")
    assert str(exc) == "namespace web1 does not exist; create it with: ip netns add web1"
    assert exc.exit_code == errors.ExitCode.NOT_FOUND
    assert isinstance(exc, errors.FdpError)


def test_exit_codes_are_distinct() -> None:
    values = [code.value for code in errors.ExitCode]
    assert len(values) == len(set(values))
