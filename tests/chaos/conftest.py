"""Fixtures of the chaos tier and the summary table printed after it ran."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.chaos import report
from tests.chaos.chaoslab import ChaosLab
from tests.netns.conftest import make_lab  # noqa: F401  (the fixture, for this tier too)
from weave_fdp.lab.lab import Lab


@pytest.fixture
def chaos_lab(make_lab: Callable[..., Lab]) -> Iterator[Callable[..., ChaosLab]]:  # noqa: F811
    """Factory: ``chaos_lab(hosts=2, launch_args=(), env={i: {...}})`` -> a ChaosLab, converged;
    make_lab tears it down (routers reset, namespaces removed, none left behind)."""
    def factory(hosts: int = 2, **kw: object) -> ChaosLab:
        return ChaosLab(make_lab, hosts, **kw)   # type: ignore[arg-type]

    yield factory


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.ROWS:
        return
    report.save()
    terminalreporter.write_sep("=", "chaos summary")
    terminalreporter.write_line(report.table())
    terminalreporter.write_line(f"(rows also in {report.SUMMARY.relative_to(report.ROOT)})")
