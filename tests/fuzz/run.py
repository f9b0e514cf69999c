"""`make fuzz`: coverage-guided fuzzing (atheris/libFuzzer) of every target in targets.py.

    python -m tests.fuzz.run [--seconds 30] [--targets a,b] [--corpus build/fuzz/corpus]

Each target runs in its own child process for a fixed time (``--seconds``, default
``$FUZZ_SECONDS`` or 30), its code instrumented for coverage, starting from its seeds
and the corpus kept from earlier runs (``--corpus``, not committed). A crashing input
is written to ``tests/fuzz_regressions/<target>/crash-<sha1>``: commit it, and
``tests/unit/test_fuzz_regressions.py`` replays it in ``make test`` from then on.
The summary (inputs tried, coverage, crashes per target) is printed and written as
JSON to ``--summary`` (default build/fuzz/summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
ARTIFACT_RE = re.compile(r"^(crash|timeout|oom|leak)-")


def child(name: str, seconds: int, corpus: Path) -> None:
    """Fuzz one target in this process until ``seconds`` pass or it crashes."""
    import logging

    import atheris

    logging.disable(logging.CRITICAL)   # refusals log warnings; millions of them only slow the fuzzer
    with atheris.instrument_imports(include=["weave_fdp", "tests.fuzz.targets"]):
        from tests.fuzz import targets
    t = targets.TARGETS[name]
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(t.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    out = REGRESSIONS / name
    out.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-artifact_prefix={out}/",
                   "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=1536", "-max_len=2048",
                   str(corpus)], t.run)
    atheris.Fuzz()


def _stat(text: str, key: str) -> int | None:
    m = re.search(rf"stat::{key}:\s+(\d+)", text)
    return int(m.group(1)) if m else None


def run_target(name: str, seconds: int, corpus_root: Path) -> dict:
    before = {p.name for p in (REGRESSIONS / name).glob("*")} if (REGRESSIONS / name).exists() else set()
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cp = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--child", name, "--seconds", str(seconds),
                         "--corpus", str(corpus_root)], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=seconds * 3 + 120)
    text = cp.stdout + cp.stderr
    new = sorted(p.name for p in (REGRESSIONS / name).glob("*")
                 if p.name not in before and ARTIFACT_RE.match(p.name))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    res = {"target": name, "seconds": round(time.monotonic() - t0, 1), "exit": cp.returncode,
           "inputs": _stat(text, "number_of_executed_units") or 0,
           "coverage": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
           "corpus": len(list((corpus_root / name).glob("*"))), "crashes": new}
    if cp.returncode != 0:
        # the traceback of the crash, for the report (libFuzzer prints it before the artifact line)
        m = re.search(r"=== Uncaught Python exception: ===\n(.*?)\n==\d+== ERROR", text, re.S)
        res["error"] = (m.group(1) if m else text[-1500:]).strip()[-1500:]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "30")))
    ap.add_argument("--targets", default=os.environ.get("FUZZ_TARGETS", ""))
    ap.add_argument("--corpus", type=Path, default=ROOT / "build" / "fuzz" / "corpus")
    ap.add_argument("--summary", type=Path, default=ROOT / "build" / "fuzz" / "summary.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.seconds, args.corpus / args.child)
        return 0
    from tests.fuzz.targets import TARGETS

    names = [n for n in args.targets.split(",") if n] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"error: unknown fuzz target(s) {', '.join(unknown)}; targets are: {', '.join(TARGETS)}",
              file=sys.stderr)
        return 2
    results = []
    for n in names:
        print(f"fuzz {n}: {TARGETS[n].what} ({args.seconds} s)", flush=True)
        r = run_target(n, args.seconds, args.corpus)
        results.append(r)
        state = f"CRASH {', '.join(r['crashes']) or '(exit ' + str(r['exit']) + ')'}" if r["exit"] else "ok"
        print(f"  {r['inputs']:>9} inputs, coverage {r['coverage']}, corpus {r['corpus']}: {state}", flush=True)
        if r.get("error"):
            print("  " + r["error"].replace("\n", "\n  "), flush=True)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps({"seconds_per_target": args.seconds, "targets": results}, indent=1))
    print(f"\n{'target':<18} {'inputs':>10} {'cov':>6} {'crashes':>8}")
    for r in results:
        print(f"{r['target']:<18} {r['inputs']:>10} {r['coverage'] or 0:>6} {len(r['crashes']):>8}")
    total = sum(r["inputs"] for r in results)
    bad = [r for r in results if r["exit"]]
    print(f"{'total':<18} {total:>10} {'':>6} {sum(len(r['crashes']) for r in results):>8}")
    if bad:
        print(f"\n{len(bad)} target(s) crashed; the inputs are in {REGRESSIONS.relative_to(ROOT)}/<target>/: "
              "fix the decoder and commit them (make test replays them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
