"""Every fuzz target on its seeds, on every input the fuzzer ever crashed on (committed under
tests/fuzz_regressions/<target>/), and on random bytes from hypothesis: none may raise.

`make fuzz` (tests/fuzz/run.py) finds new inputs; this file keeps the fixed ones fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, join_records, split_records

REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz_regressions"
CASES = sorted((p.parent.name, p) for p in REGRESSIONS.glob("*/*") if p.is_file() and not p.name.startswith("."))


def test_every_target_has_seeds() -> None:
    assert len(TARGETS) >= 9
    for t in TARGETS.values():
        assert t.seeds(), t.name


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_pass(name: str) -> None:
    for seed in TARGETS[name].seeds():
        TARGETS[name].run(seed)


def test_regression_dirs_name_targets() -> None:
    for d in REGRESSIONS.iterdir():
        assert not d.is_dir() or d.name in TARGETS, f"{d} names no fuzz target"


@pytest.mark.parametrize("name,path", CASES, ids=[f"{n}/{p.name[:18]}" for n, p in CASES])
def test_crash_found_by_fuzzing_stays_fixed(name: str, path: Path) -> None:
    TARGETS[name].run(path.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_random_bytes(name: str, data: bytes) -> None:
    TARGETS[name].run(data)


@pytest.mark.parametrize("name", ["sleeve_plain", "sleeve_sealed", "mesh_messages", "state_files"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.binary(max_size=200), max_size=6), seed=st.integers(0, 10))
def test_mutated_seeds(name: str, records: list[bytes], seed: int) -> None:
    """Seeds with random records spliced in: past the magic numbers random bytes rarely guess."""
    seeds = TARGETS[name].seeds()
    base = split_records(seeds[seed % len(seeds)])
    TARGETS[name].run(join_records(base[:seed % (len(base) + 1)] + records + base[seed % (len(base) + 1):]))


def test_split_and_join_are_inverse() -> None:
    recs = [b"", b"a", bytes(300)]
    assert split_records(join_records(recs)) == recs
