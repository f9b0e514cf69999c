"""Damaged state files: recovered from their copy (and said so), or launch stops naming the file
and the fix; never a silent new identity or a silent loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weave_fdp.router import statefile
from weave_fdp.router.state import DIRECT_FILE, PEER_FILE, RouterState
from weave_fdp.router.statefile import StateFileCorrupt, load_json

NAME = "7e:aa:bb:cc:dd:ee"


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:7])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "wrong shape":
        path.write_text(json.dumps({"name": 42, "peers": "192.0.2.1"}))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "wrong shape"])
def test_damaged_identity_without_a_copy_stops_launch_naming_the_file(tmp_path: Path, how: str) -> None:
    (tmp_path / PEER_FILE).write_text(json.dumps({"name": NAME, "short_id": 5}))   # no copy beside it
    _damage(tmp_path / PEER_FILE, how)
    with pytest.raises(StateFileCorrupt) as ei:
        RouterState(tmp_path).load_peer()
    msg = str(ei.value)
    assert f"peer identity file {tmp_path / PEER_FILE} is damaged" in msg
    assert "--name" in msg and "remove" in msg            # the fix: keep the name, or start afresh
    assert (tmp_path / (PEER_FILE + ".corrupt")).exists()  # the evidence is kept


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "wrong shape"])
def test_damaged_files_are_recovered_from_their_copy_and_said_so(tmp_path: Path, how: str) -> None:
    st = RouterState(tmp_path)
    st.save_peer(NAME, 77)
    st.save_direct(["192.0.2.1:6783", "192.0.2.2:6783"])
    for f in (PEER_FILE, DIRECT_FILE):
        _damage(tmp_path / f, how)
    assert RouterState(tmp_path).load_peer() == {"name": NAME, "short_id": 77}
    assert RouterState(tmp_path).load_direct() == ["192.0.2.1:6783", "192.0.2.2:6783"]
    notes = [n for n in statefile.recovered() if str(tmp_path) in n]   # (the list keeps the last 20)
    assert len(notes) == 2 and "peer identity file" in notes[0] and "recovered from its previous good copy" in notes[0]
    assert "direct peers file" in notes[1]
    # the file itself is whole again: the next start reads it without a word
    assert json.loads((tmp_path / PEER_FILE).read_text())["name"] == NAME
    RouterState(tmp_path).load_peer()
    assert len([n for n in statefile.recovered() if str(tmp_path) in n]) == 2


def test_a_damaged_file_never_overwrites_its_good_copy(tmp_path: Path) -> None:
    st = RouterState(tmp_path)
    st.save_peer(NAME, 1)
    _damage(tmp_path / PEER_FILE, "truncated")
    assert st.load_peer()["name"] == NAME          # recovered
    _damage(tmp_path / PEER_FILE, "garbage")       # damaged again: the copy is still good
    assert st.load_peer()["name"] == NAME


def test_absent_files_are_a_fresh_start(tmp_path: Path) -> None:
    assert RouterState(tmp_path).load_peer() == {} and RouterState(tmp_path).load_direct() == []


def test_rebuild_is_preferred_for_files_the_kernel_can_tell(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text("{\"vethwepl1\": {\"cid")
    seen = []

    def rebuild(prev: object) -> tuple[dict, str]:
        seen.append(prev)
        return {"vethwepl1": {"cidrs": ["10.32.0.1/12"]}}, "the kernel"

    got = load_json(path, lambda d: None if isinstance(d, dict) else "not an object", what="container records",
                    fix="", rebuild=rebuild)
    assert got == {"vethwepl1": {"cidrs": ["10.32.0.1/12"]}} and seen == [None]
    assert "recovered from the kernel" in statefile.recovered()[-1]
