"""`weave-fdp top` and `weave-fdp flows` end to end on recorded reports (replay source)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weave_fdp import paths
from weave_fdp.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SERIES = str(FIXTURES / "report_series.json")
MESH = str(FIXTURES / "report_mesh.json")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize("cmd", ["top", "flows"])
def test_help_has_an_example(capsys, cmd: str) -> None:
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and "Example:" in out and f"weave-fdp {cmd}" in out


def test_top_once_prints_one_full_frame(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run(capsys, "top", "--once", "--demo-file", MESH)
    assert code == 0 and err == ""
    for want in ("host5", "unreachable", "Connections (3)", "sleeve", "10.32.0.1:43512", "no_route", "IPAM"):
        assert want in out, want


def test_top_json_lines_carry_rates_from_the_second_frame(capsys) -> None:
    code, out, _ = run(capsys, "top", "--json", "--count", "3", "--interval", "0.05", "--flows", "2",
                       "--demo-file", SERIES)
    frames = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(frames) == 3
    assert frames[0]["flows"][0]["rate"] is None
    assert frames[2]["flows"][0]["dport"] == 5201 and frames[2]["flows"][0]["rate"] > 0
    assert len(frames[2]["flows"]) == 2 and frames[2]["counts"]["peers"] == 5


def test_flows_list_filters_by_peer_and_proto(capsys) -> None:
    code, out, _ = run(capsys, "flows", "--json", "--peer", "host3", "--proto", "tcp", "--demo-file", MESH)
    flows = json.loads(out)
    assert code == 0 and [(f["dst_ip"], f["dport"], f["via_nickname"]) for f in flows] == [("10.48.0.2", 80, "host3")]
    code, out, _ = run(capsys, "flows", "--demo-file", MESH)
    assert code == 0 and "10.40.0.1:5201" in out and "fastdp" in out


def test_flows_follow_streams_moving_flows_with_rates(capsys) -> None:
    code, out, _ = run(capsys, "flows", "--follow", "--json", "--count", "2", "--interval", "0.05",
                       "--proto", "udp", "--demo-file", SERIES)
    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(recs) == 2
    assert recs[1]["delta_packets"] == 20 and recs[1]["delta_bytes"] == 1800 and recs[1]["rate"] > 0
    code, out, _ = run(capsys, "flows", "--follow", "--count", "2", "--interval", "0.05", "--demo-file", SERIES)
    assert "+1.5K pkts +2.2MB" in out


def test_unknown_peer_is_one_line_naming_it(capsys) -> None:
    code, _, err = run(capsys, "flows", "--peer", "nosuch", "--demo-file", MESH)
    assert code == 7 and err.count("\n") == 1 and "'nosuch'" in err and "host2" in err


def test_bad_replay_file_is_one_line(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "top", "--once", "--demo-file", str(tmp_path / "nope.json"))
    assert code == 7 and "nope.json does not exist" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    code, _, err = run(capsys, "top", "--once", "--demo-file", str(bad))
    assert code == 2 and "not JSON" in err and err.count("\n") == 1


def test_no_router_says_how_to_start_one(capsys, monkeypatch) -> None:
    monkeypatch.setattr(paths, "api_socket_name", lambda: f"\0weave-fdp-test/none-{os.getpid()}")
    for argv in (["top", "--once"], ["top", "--json"], ["flows"], ["top"]):
        code, out, err = run(capsys, *argv)
        assert code == 3 and out == "" and err.count("\n") == 1, argv
        assert "weave-fdp launch" in err


def test_broken_pipe_on_json_exits_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "weave_fdp.cli.main", "top", "--json", "--interval", "0.05", "--demo-file", SERIES],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    json.loads(proc.stdout.readline())
    proc.stdout.close()  # like `| head -1`
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert proc.stderr.read() == b""


def test_live_view_without_a_terminal_says_what_to_use(capsys) -> None:
    code, out, err = run(capsys, "top", "--demo-file", MESH)
    assert code == 2 and "--once" in err and err.count("\n") == 1


def test_flows_json_has_the_report_fields_only(capsys) -> None:
    code, out, _ = run(capsys, "flows", "--json", "--demo-file", MESH)
    rec = json.loads(out)[0]
    assert set(rec) == {"src_mac", "dst_mac", "src_ip", "dst_ip", "proto", "sport", "dport", "packets", "bytes",
                        "last_seen", "path", "via", "via_nickname", "time"}
