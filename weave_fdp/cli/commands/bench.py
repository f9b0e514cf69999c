"""`bench`: the benchmark group (measured figures, printed; not tests).

The group and its subcommands are put together here: mesh and ipam below,
datapath and dns from their own modules (they are longer).
"""

from __future__ import annotations

import click

from weave_fdp.cli.commands.bench_datapath import datapath_cmd
from weave_fdp.cli.commands.bench_dns import dns_cmd
from weave_fdp.cli.output import json_option, print_json


@click.group()
def bench() -> None:
    """Benchmarks (not tests): measured figures, printed.

    \b
    Example:
      weave-fdp bench mesh --sim 100,500 --real 10
    """


@bench.command("mesh")
@click.option("--sim", "sim_sizes", default="10,100,500", show_default=True,
              help="Simulated peer counts (in-memory transport), comma separated.")
@click.option("--real", "real_count", default=10, show_default=True,
              help="Real routers in namespaces (0 to skip).")
@click.option("--protocol", type=click.Choice(["1", "2", "3"]), default="3", show_default=True,
              help="Topology gossip of simulated links: 1 pushes entries, 2 gossips digests, "
                   "3 gossips digests and carries entries in a binary layout.")
@click.option("--gc", "keep_gc", is_flag=True, help="Keep Python's cyclic GC on during simulated runs.")
@click.option("--no-overlays", is_flag=True, help="Real routers without data planes (control plane only).")
@click.option("--save", "save_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the simulated results (JSON) after each size, so a long run keeps what it measured.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write a PNG of the simulated per-peer figures against N.")
@json_option
def bench_mesh(sim_sizes: str, real_count: int, protocol: str, keep_gc: bool, no_overlays: bool,
               save_path: str | None, plot_path: str | None, as_json: bool) -> None:
    """Mesh convergence, idle cost and gossip bytes (simulated and real routers).

    \b
    Example:
      weave-fdp bench mesh --sim 100 --real 0
      weave-fdp bench mesh --sim 100,500 --real 0 --protocol 1     (the push gossip of protocol 1)
      weave-fdp bench mesh --sim 100,500,1000,2000,4096 --real 0 --plot docs/mesh-scale.png
    """
    from pathlib import Path

    from weave_fdp.bench import mesh as mesh_bench

    sizes = [int(s) for s in sim_sizes.split(",") if s.strip()]
    res = mesh_bench.run_all(sizes, real_count, echo=None if as_json else click.echo, protocol=int(protocol),
                             gc_paused=not keep_gc, overlays=not no_overlays,
                             plot_path=Path(plot_path) if plot_path else None,
                             save_path=Path(save_path) if save_path else None)
    if as_json:
        print_json(res)


@bench.command("ipam")
@click.option("--sim", "sim_sizes", default="10,100", show_default=True, help="Simulated peer counts.")
@click.option("--routers", default="3,10", show_default=True, help="Real router counts for time to consensus.")
@click.option("--attaches", default=50, show_default=True, help="Attaches timed on one router (0 to skip).")
@click.option("--allocs", default=1000, show_default=True, help="Allocations (then frees) over 3 routers.")
@json_option
def bench_ipam(sim_sizes: str, routers: str, attaches: int, allocs: int, as_json: bool) -> None:
    """IPAM: attach latency once ready, time to consensus, allocation rate, ring gossip bytes.

    \b
    Example:
      weave-fdp bench ipam
      weave-fdp bench ipam --routers 3 --attaches 20 --allocs 300
    """
    from weave_fdp.bench import ipam as ipam_bench

    res = ipam_bench.run_all([int(s) for s in sim_sizes.split(",") if s.strip()],
                             [int(s) for s in routers.split(",") if s.strip()], attaches, allocs,
                             echo=None if as_json else click.echo)
    if as_json:
        print_json(res)


@bench.command("sleeve-bound")
@click.option("--rounds", default=3, show_default=True, help="Rounds; each runs every path twice per placement.")
@click.option("--seconds", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--paths", "paths", default="underlay,sleeve,null_py,null_py_procs,null_c", show_default=True,
              help="Paths, comma separated (also null_c_procs).")
@click.option("--placements", default="pinned,unpinned", show_default=True,
              help="iperf3 pinned as bench datapath pins it, unpinned, or both.")
@click.option("--baseline", type=click.Path(file_okay=False), default=None,
              help="A source tree whose sleeve also runs (paths sleeve_base, sleeve_enc_base): an A/B.")
@json_option
def bench_sleeve_bound(rounds: int, seconds: float, paths: str, placements: str, baseline: str | None,
                       as_json: bool) -> None:
    """One TCP stream through the sleeve against null forwarders (Python, C): the ceiling here.

    Builds the lab of bench datapath's sleeve path once per path (underlay, the real
    sleeve, a null forwarder in Python in two threads and in two processes, one in C
    compiled with gcc at the start), then measures them interleaved: throughput, share
    of the underlay paired run by run, whole-machine CPU seconds and context switches
    per GB. Everything is torn down at the end, also on Ctrl-C. See docs/SLEEVE.md.

    \b
    Example:
      weave-fdp bench sleeve-bound --rounds 3
      weave-fdp bench sleeve-bound --paths underlay,null_c,null_c_procs --placements pinned
      weave-fdp bench sleeve-bound --paths underlay,sleeve,sleeve_base --baseline /path/to/other/tree
    """
    from weave_fdp.bench import sleeve_bound
    from weave_fdp.cli.output import err_console, run_interruptible

    def csv(v: str) -> list[str]:
        return [x.strip() for x in v.split(",") if x.strip()]

    opts = sleeve_bound.Options(rounds=rounds, seconds=seconds, paths=csv(paths), placements=csv(placements),
                                baseline=baseline)
    echo = None if as_json else (lambda s: err_console().print(s, markup=False))
    res = run_interruptible(lambda: sleeve_bound.run(opts, echo=echo), "every lab of this run was torn down")
    if as_json:
        print_json(res)
        return
    click.echo("\n".join(sleeve_bound.report(res)))


bench.add_command(datapath_cmd)
bench.add_command(dns_cmd)

COMMANDS = [bench]
