"""`python -m weave_fdp.bench.sleeve_profile`: one stream through the standalone sleeve, every
forwarder thread named and measured, everything it built gone afterwards."""

from __future__ import annotations

import subprocess

from weave_fdp.bench.sleeve_profile import profile


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_profile_names_the_data_threads_of_both_hosts() -> None:
    lines: list[str] = []
    res = profile(password=False, seconds=2, perf=False, echo=lines.append)
    assert res["gbps"] > 0.01, lines
    busy = {(t["key"].split("/")[0], t["name"]) for t in res["threads"] if t["cpu_pct"] > 0}
    # host 1 captures the stream, host 2 receives it: each host's data thread named and busy
    assert {("h1", "sleeve-data"), ("h2", "sleeve-data")} <= busy, res["threads"]
    names = {t["name"] for t in res["threads"] if t["key"].startswith(("h1/", "h2/"))}
    assert {"sleeve-data", "sleeve-timer"} <= names
    assert any("sleeve-data" in line for line in lines)
    assert not [ns for ns in _namespaces() if ns.startswith(res["lab"])]     # its lab is gone
