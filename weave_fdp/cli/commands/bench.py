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


bench.add_command(datapath_cmd)
bench.add_command(dns_cmd)

COMMANDS = [bench]
