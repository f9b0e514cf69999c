"""``weave-fdp bench datapath``: underlay, kernel VXLAN, fastdp and sleeve in one run.

A subcommand of the ``bench`` group (bench.py adds it; no top-level command of its own).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from weave_fdp.cli.output import console, err_console, json_option, print_json, run_interruptible
from weave_fdp.errors import UsageError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("datapath")
@click.option("--rounds", default=3, show_default=True, help="Rounds; each runs every test on every path.")
@click.option("--seconds", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--paths", "paths", default="underlay,vxlan,fastdp,sleeve,sleeve_enc", show_default=True,
              help="Paths to compare, comma separated.")
@click.option("--tests", "tests", default="tcp1,tcp1u,tcp4,rr,udp64", show_default=True,
              help="Tests to run, comma separated.")
@click.option("--markdown", is_flag=True, help="Also print the table as Markdown.")
@click.option("--save", "save", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results as JSON to this file.")
@click.option("--load", "load", type=click.Path(exists=True, dir_okay=False),
              help="Measure nothing: show the results saved with --save (or --json) in FILE.")
@json_option
def datapath_cmd(rounds: int, seconds: float, paths: str, tests: str, markdown: bool, save: str | None,
                 load: str | None, as_json: bool) -> None:
    """Throughput, latency, packet rate and CPU per GB of every datapath, side by side.

    Builds one two-host lab per path (underlay, kernel VXLAN + bridge as Flannel
    sets it up, fastdp, sleeve, encrypted sleeve), then measures them
    interleaved: iperf3 TCP 1 and 4 streams, sockperf TCP ping-pong p50/p99,
    64-byte UDP packet rate, CPU seconds per GB. Prints medians and ratios
    against the kernel VXLAN path (vx) and the underlay (ul). Everything is torn
    down at the end, also on Ctrl-C. Default run: about 5 minutes.

    \b
    Example:
      weave-fdp bench datapath --rounds 3 --seconds 3
      weave-fdp bench datapath --paths vxlan,fastdp --tests tcp1,rr --json
    """
    from weave_fdp.bench import datapath

    if load:
        res = _load(load)
    else:
        opts = datapath.Options(rounds=rounds, seconds=seconds, paths=_csv(paths), tests=_csv(tests))
        echo = None if as_json else (lambda s: err_console().print(s, markup=False))
        res = run_interruptible(lambda: datapath.run(opts, echo=echo), "every lab of this run was torn down")
    if save:
        with open(save, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    if as_json:
        print_json(res)
        return
    _render(res, markdown)


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            res = json.load(f)
        res["paths"], res["metrics"], res["meta"]  # noqa: B018  (the keys the table needs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a saved datapath benchmark ({exc})",
                         fix="pass a file written by `weave-fdp bench datapath --save FILE`") from exc
    return res


def _render(res: dict[str, Any], markdown: bool) -> None:
    from weave_fdp.bench import results

    keys = [k for k in results.PATHS if k in res["paths"]]
    meta = res["meta"]
    table = Table(title=f"weave-fdp datapath benchmark — {meta['date']}, kernel {meta['kernel']}, "
                        f"{meta['cpus']} CPUs, {meta['rounds']} rounds × {meta['seconds']:g} s "
                        f"(median; ratios of medians: vx = vs kernel VXLAN, ul = vs underlay)",
                  show_lines=True)
    table.add_column("metric")
    for k in keys:
        mtu = res["paths"][k].get("mtu")
        table.add_column(f"{results.PATHS[k]}\nMTU {mtu}", justify="right")
    for row in results.table_rows(res["metrics"], keys):
        table.add_row(*row)
    con = console()
    con.print(table)
    con.print(f"idle load before measuring: {meta['idle_load_cpus']} CPUs busy; run took {meta['elapsed_s']} s")
    for c in res["checks"]:
        mark = {True: "[green]ok[/]", False: "[red]BELOW[/]", None: "[yellow]n/a[/]"}[c["ok"]]
        con.print(f"{mark}  {c['what']}: {c['detail']}")
    for line in results.verdicts([results.Check(c["what"], c["ok"], c["detail"]) for c in res["checks"]]):
        con.print(line, markup=False)
    for e in res["errors"]:
        con.print(f"[red]error[/] {e}", markup=True)
    if markdown:
        click.echo(results.markdown_table(res["metrics"], keys))
