"""`weave-fdp status connections` lines: Weave's shape, and a reason wherever fastdp is not used."""

from __future__ import annotations

from weave_fdp.cli.status_format import connection_line

BASE = {"address": "192.0.2.2:6783", "outbound": True, "peer": "7e:00:00:00:00:02", "nickname": "h2",
        "info": "", "mode": None, "mode_reason": None, "mtu": None, "retry_at": None}


def test_fastdp_connection() -> None:
    line = connection_line({**BASE, "state": "established", "mode": "fastdp", "mtu": 1450})
    assert line.split() == ["->", "192.0.2.2:6783", "established", "fastdp", "7e:00:00:00:00:02(h2)", "mtu=1450"]


def test_sleeve_connection_says_why() -> None:
    line = connection_line({**BASE, "state": "established", "mode": "sleeve", "mtu": 1423,
                            "mode_reason": "fastdp heartbeats lost"})
    assert " sleeve " in line and line.endswith("mtu=1423 (fastdp heartbeats lost)")


def test_inbound_connection_without_a_data_path_says_why() -> None:
    line = connection_line({**BASE, "outbound": False, "state": "established",
                            "mode_reason": "no overlay running"})
    assert line.startswith("<- ") and line.endswith("(no overlay running)")


def test_failed_connection_shows_cause_and_retry() -> None:
    line = connection_line({**BASE, "state": "failed", "peer": None, "nickname": None,
                            "info": "connect to 192.0.2.2:6783: refused", "retry_at": 1795637474.6})
    assert "failed" in line and "connect to 192.0.2.2:6783: refused, retry: " in line


def test_dialing_connection_is_plain() -> None:
    line = connection_line({**BASE, "state": "pending", "peer": None, "nickname": None})
    assert line.split()[2:] == ["pending", "connecting"]


def test_encryption_in_weaves_words() -> None:
    """With --password each connection says whether its data path is encrypted."""
    enc = connection_line({**BASE, "state": "established", "mode": "fastdp", "mtu": 1400, "encryption": "encrypted"})
    assert enc.split()[2:5] == ["established", "encrypted", "fastdp"]
    sl = connection_line({**BASE, "state": "established", "mode": "sleeve", "mtu": 1400, "encryption": "encrypted",
                          "mode_reason": "encryption: kernel lacks ESP"})
    assert " encrypted sleeve " in sl and sl.endswith("(encryption: kernel lacks ESP)")
    plain = connection_line({**BASE, "state": "established", "mode": "fastdp", "encryption": "unencrypted"})
    assert " unencrypted fastdp " in plain
    # no data path yet: no encryption word in front of "-"
    none = connection_line({**BASE, "state": "established", "encryption": "encrypted", "mode_reason": "x"})
    assert " - " in none and "encrypted" not in none


def test_status_summary_of_a_real_report() -> None:
    """`status` of a recorded three-peer report: the router block, then IPAM and DNS."""
    import json
    from pathlib import Path

    from weave_fdp.cli import status_format as fmt

    rep = json.loads((Path(__file__).parents[1] / "fixtures" / "report_mesh.json").read_text())
    s = fmt.summary(rep)
    assert s["peers"] == len(rep["peers"]) and s["connections"] == len(rep["connections"])
    lines = fmt.summary_lines(rep)
    assert lines[0].split(": ", 1) == ["        Version", rep["version"]]
    assert any(ln.strip() == f"Connections: {s['connections']} ({s['established']} established, "
               f"{s['failed']} failed)" for ln in lines)
    assert lines.count("") == (1 if rep.get("ipam") else 0) + (1 if s["dns"] else 0)
    peers = fmt.peer_lines(rep)
    assert sum(1 for ln in peers if " sid=" in ln) == len(rep["peers"])
