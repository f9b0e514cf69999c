"""``weave-fdp probe``: can this kernel run the fast path? If not, why and what to do."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from weave_fdp.cli.output import console, json_option, print_json
from weave_fdp.probe.checks import run_probe
from weave_fdp.probe.model import ProbeReport

PROBE_EXIT_CODES = """
Exit codes: 0 fastdp available, 10 only sleeve available, 11 neither.
"""


def _result_cell(report: ProbeReport, ok: bool | None, name: str) -> str:
    if ok:
        return "[green]yes[/]"
    if ok is None:
        return "[yellow]skipped[/]"
    needed = report.required_for(name)
    return "[red]no[/]" if needed else "[yellow]no (optional)[/]"


def probe_table(report: ProbeReport) -> Table:
    """The probe's checks as a rich table (check, result, detail, fix)."""
    table = Table(title="kernel capability probe", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail")
    table.add_column("fix")
    for check in report.checks:
        table.add_row(check.name, _result_cell(report, check.ok, check.name), check.detail, check.fix,
                      end_section=False)
    return table


def render_report(report: ProbeReport, out: Console | None = None) -> None:
    """Table, then the verdict lines (also used by the lab demo)."""
    out = out or console()
    out.print(probe_table(report))
    for line in report.verdict_lines():
        colour = "green" if line.endswith(": available") else "red"
        out.print(f"[bold {colour}]{line}[/]", soft_wrap=True)
    if any(c.ok is None and "root" in c.detail for c in report.checks):
        out.print("[yellow]some checks need root: run `sudo weave-fdp probe` for the full picture[/]")
    out.print(f"[dim]probe took {report.duration_s:.2f} s[/]")


@click.command(epilog=PROBE_EXIT_CODES)
@json_option
@click.option("--dev", metavar="IFACE", default=None,
              help="Also check native XDP on IFACE (current namespace) by briefly attaching a "
                   "pass-all program; nothing stays attached, an existing program is left alone.")
def probe(as_json: bool, dev: str | None) -> None:
    """Check, for real, what this kernel offers the fast path (fastdp) and the fallback (sleeve).

    Loads tiny BPF programs, creates maps, and makes throw-away devices in a throw-away
    network namespace; leaves nothing behind. Without root, it says what it could not check.

    \b
    Examples:
      weave-fdp probe                  table and verdict
      weave-fdp probe --json | jq .fastdp
      weave-fdp probe --dev eth1       can eth1 run XDP natively?
    """
    report = run_probe(dev)
    if as_json:
        print_json(report.to_dict())
    else:
        render_report(report)
    # sys.exit, not ctx.exit: main() runs click with standalone_mode=False, which returns
    # ctx.exit's code instead of exiting with it.
    sys.exit(int(report.exit_code))


COMMANDS = [probe]
