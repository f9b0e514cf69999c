"""`bench sleeve-bound`, briefly: one TCP stream through the underlay and through the null
forwarders (Python in two processes, Python and C sealing with AES-256-GCM; the C one built
with gcc where it is installed) in the sleeve's lab shape, every run measured and paired, everything it
built gone afterwards."""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess

from weave_fdp.bench.sleeve_bound import Options, run


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_a_stream_crosses_the_null_forwarders_and_every_lab_is_gone() -> None:
    c = shutil.which("gcc") and ctypes.util.find_library("crypto")
    paths = ["underlay", "null_py_procs", "null_py_gcm"] + (["null_c_gcm"] if c else [])
    lines: list[str] = []
    res = run(Options(rounds=1, seconds=1, paths=paths, placements=["pinned"]), echo=lines.append)
    assert res["errors"] == [], lines
    rows = res["summary"]["pinned"]["paths"]
    for p in paths:
        assert rows[p]["gbps"]["n"] == 2 and rows[p]["gbps"]["low"] > 0.05, (p, lines)
        assert rows[p]["cpu_s_per_gb"]["median"] > 0 and rows[p]["ctxt_per_gb"]["median"] > 0
        assert rows[p]["own_cpu_s_per_gb"]["median"] > 0
    assert rows["null_py_procs"]["share"]["n"] == 2
    left = [ns for ns in _namespaces() if any(ns.startswith(lab) for lab in res["meta"]["labs"])]
    assert left == []
