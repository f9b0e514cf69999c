"""``weave-fdp lab``: several hosts made of network namespaces on this machine."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from weave_fdp.cli.demo import run_overlay_demo
from weave_fdp.cli.output import console, err_console, host_matrix, json_option, print_json
from weave_fdp.errors import FdpError, PermissionDenied
from weave_fdp.lab import state as lab_state
from weave_fdp.lab.lab import DEFAULT_PREFIX, Lab, ProgressFn, check_prefix
from weave_fdp.lab.topology import MAX_HOSTS, TOPOLOGIES
from weave_fdp.plumbing.netns import run_in_netns

LAB_EXIT_CODES = """
Exit codes: 0 ok, 1 failure, 2 bad option (topology, host count, prefix),
4 a namespace of that prefix exists (run `weave-fdp lab down --prefix P`),
5 not root, 7 no such lab or host, 8 a tool is missing (ip, nft, ping).
`lab exec` exits with the command's own code.
"""


def _complete_topology(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [t for t in TOPOLOGIES if t.startswith(incomplete)]


prefix_option = click.option(
    "--prefix", default=None, metavar="P",
    help=f"Lab name prefix: namespaces are P-ul, P-h1, P-h1-c1, ... (default {DEFAULT_PREFIX}, "
         "or the only lab that is up).")


def _resolve_prefix(prefix: str | None) -> str:
    """An explicit prefix; else the default lab; else the only lab that is up."""
    if prefix is not None:
        return check_prefix(prefix)
    known = lab_state.known_prefixes()
    if DEFAULT_PREFIX not in known and len(known) == 1:
        return known[0]
    return DEFAULT_PREFIX


@contextmanager
def _progress(title: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr fed by the lab's (what, done, total) callback."""
    if not enabled or not err_console().is_terminal:
        yield lambda what, done, total: None
        return
    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                   console=err_console(), transient=True)
    with bar:
        task = bar.add_task(title, total=1)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"{title}: {what}", completed=done, total=total)

        yield update


def _hosts_table(lab: Lab) -> Table:
    t = Table(title=f"lab {lab.prefix}: {lab.hosts} hosts, topology {lab.topology}, underlay {lab.ul_ns}/ul0")
    for col in ("host", "namespace", "underlay", "neighbours", "containers"):
        t.add_column(col)
    for h in lab.describe()["hosts"]:
        ns = h["netns"] if h["present"] else f"[red]{h['netns']} (missing)[/]"
        t.add_row(h["name"], ns, f"{h['ip']}/24 eth0", " ".join(h["neighbours"]) or "-",
                  " ".join(c["name"] for c in h["containers"]) or "-")
    return t


def _reach_table(lab: Lab, reach: dict[tuple[int, int], bool]) -> Table:
    exp = lab.expected_reachability()

    def cell(i: int, j: int) -> str:
        if reach[(i, j)] and exp[(i, j)]:
            return "[green]ok[/]"
        if not reach[(i, j)] and not exp[(i, j)]:
            return "[dim]blocked[/]"
        return "[bold red]LOST[/]" if exp[(i, j)] else "[bold yellow]LEAK[/]"

    return host_matrix(lab.hosts, "underlay reachability", lambda i: f"h{i}", cell,
                       caption="ping from row to column; blocked = not linked", diagonal="[dim]-[/]")


def _reach_json(lab: Lab, reach: dict[tuple[int, int], bool]) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {f"h{i}": {} for i in range(1, lab.hosts + 1)}
    for (i, j), ok in sorted(reach.items()):
        out[f"h{i}"][f"h{j}"] = ok
    return out


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("the lab needs root (network namespaces)", fix="run it as root (sudo)")


@click.group("lab", epilog=LAB_EXIT_CODES)
def lab_group() -> None:
    """Several hosts made of network namespaces on this one machine.

    Hosts are namespaces P-h1..P-hN with eth0 = 192.0.2.<i>/24, joined by bridge
    ul0 in namespace P-ul, where nftables enforces the topology (a line really
    relays). Nothing is routed to this machine's uplink.

    \b
    Examples:
      weave-fdp lab up --hosts 3 --topology line
      weave-fdp lab status
      weave-fdp lab exec h1 -- ping -c1 192.0.2.2
      weave-fdp lab down
      weave-fdp lab demo
    """


@lab_group.command("up", epilog=LAB_EXIT_CODES)
@click.option("--hosts", "-n", type=int, default=3, show_default=True, help=f"Number of hosts (1..{MAX_HOSTS}).")
@click.option("--topology", "-t", default="full", show_default=True, metavar="|".join(TOPOLOGIES),
              shell_complete=_complete_topology, help="Which hosts share an underlay link.")
@click.option("--containers", "-c", type=int, default=0, show_default=True,
              help="Container namespaces per host (P-h<i>-c<j>, lo only).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, metavar="P", help="Lab name prefix.")
@click.option("--mtu", type=int, default=1500, show_default=True, help="Underlay MTU.")
@click.option("--routers/--no-routers", default=False, show_default=True,
              help="Launch a router in every host (and attach the containers).")
@json_option
def up_cmd(hosts: int, topology: str, containers: int, prefix: str, mtu: int, routers: bool,
           as_json: bool) -> None:
    """Build a lab (rolls back everything on failure or Ctrl-C).

    \b
    Examples:
      weave-fdp lab up
      weave-fdp lab up --hosts 4 --topology ring --containers 2 --prefix lab2
    """
    lab = Lab(prefix=prefix, hosts=hosts, topology=topology, containers=containers, routers=routers, mtu=mtu)
    t0 = time.monotonic()
    with _progress(f"lab {prefix}", enabled=not as_json) as progress:
        lab.up(progress=progress)
    if as_json:
        print_json(lab.describe())
        return
    console().print(_hosts_table(lab))
    console().print(f"lab {prefix} up in {time.monotonic() - t0:.2f} s; "
                    f"`weave-fdp lab exec h1 -- CMD` runs a command in h1, `weave-fdp lab down` removes it")


@lab_group.command("status", epilog=LAB_EXIT_CODES)
@prefix_option
@click.option("--ping/--no-ping", default=True, show_default=True, help="Measure the reachability matrix.")
@json_option
def status_cmd(prefix: str | None, ping: bool, as_json: bool) -> None:
    """Hosts, addresses, containers and the underlay reachability matrix.

    \b
    Examples:
      weave-fdp lab status
      weave-fdp lab status --json | jq .reachability
    """
    _require_root()
    lab = Lab.load(_resolve_prefix(prefix))
    reach = lab.reachability() if ping and lab.is_up() else None
    if as_json:
        data: dict[str, Any] = lab.describe()
        data["up"] = lab.is_up()
        if reach is not None:
            exp = lab.expected_reachability()
            data["reachability"] = _reach_json(lab, reach)
            data["expected"] = _reach_json(lab, exp)
            data["reachability_ok"] = reach == exp
        print_json(data)
        return
    console().print(_hosts_table(lab))
    if reach is not None:
        console().print(_reach_table(lab, reach))
    elif not lab.is_up():
        console().print(f"[red]lab {lab.prefix} is incomplete[/]: run `weave-fdp lab down --prefix {lab.prefix}`")


@lab_group.command("exec", epilog=LAB_EXIT_CODES,
                   context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@prefix_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(prefix: str | None, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST's namespace (h1 or 1; h1-c2 for a container; ul); exits with its code.

    \b
    Examples:
      weave-fdp lab exec h1 -- ip -br addr
      weave-fdp lab exec 2 -- ping -c1 192.0.2.1
      weave-fdp lab exec h1-c1 -- ip link
    """
    _require_root()
    lab = Lab.load(_resolve_prefix(prefix))
    ns = lab.resolve(host)
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise click.UsageError("no command given: weave-fdp lab exec HOST -- CMD...")
    cp = run_in_netns(ns, argv, check=False, timeout=None, capture=False)
    # sys.exit, not ctx.exit: main() runs click with standalone_mode=False, which
    # returns ctx.exit's code instead of exiting with it.
    sys.exit(cp.returncode)


@lab_group.command("down", epilog=LAB_EXIT_CODES)
@prefix_option
@click.option("--all", "all_labs", is_flag=True, help="Remove every lab that has a state file.")
@json_option
def down_cmd(prefix: str | None, all_labs: bool, as_json: bool) -> None:
    """Remove a lab, or what a crashed run left behind (idempotent).

    Resets routers, stops every process in the lab's namespaces, deletes them.

    \b
    Examples:
      weave-fdp lab down
      weave-fdp lab down --prefix lab2
      weave-fdp lab down --all
    """
    _require_root()
    prefixes = lab_state.known_prefixes() if all_labs else [_resolve_prefix(prefix)]
    if all_labs and prefix is not None:
        prefixes = sorted(set(prefixes) | {check_prefix(prefix)})
    result = {}
    for p in prefixes:
        with _progress(f"lab {p} down", enabled=not as_json) as progress:
            result[p] = Lab.down_prefix(p, progress=progress)
    if as_json:
        print_json({"removed": result})
        return
    if not prefixes:
        console().print("no labs")
    for p, removed in result.items():
        console().print(f"lab {p}: removed {len(removed)} namespaces" if removed else f"lab {p}: nothing to remove")


def _probe_lines() -> list[str]:
    """The probe's verdict lines; a note while the probe is not there yet."""
    try:
        try:
            from weave_fdp.probe import run_probe  # type: ignore[attr-defined]
        except ImportError:
            from weave_fdp.probe.checks import run_probe
        report = run_probe()
        return list(report.verdict_lines())
    except (ImportError, AttributeError):
        return ["probe: not available yet"]
    except FdpError as exc:
        return [f"probe: failed: {exc}"]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the demo's clean-up runs on both.

    Only in this process: pyroute2 forks helpers and stops them with SIGTERM; a
    fork raising KeyboardInterrupt would run our clean-up from its copy of the stack.
    """
    me = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != me:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@lab_group.command("demo", epilog=LAB_EXIT_CODES)
@click.option("--hosts", "-n", type=int, default=3, show_default=True, help="Number of hosts.")
@click.option("--topology", "-t", default="full", show_default=True, metavar="|".join(TOPOLOGIES),
              shell_complete=_complete_topology, help="Underlay topology.")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, metavar="P", help="Lab name prefix.")
@click.option("--overlay/--no-overlay", default=True, show_default=True,
              help="Launch routers, attach a container per host, ping, iperf3, one dashboard frame.")
def demo_cmd(hosts: int, topology: str, prefix: str, overlay: bool) -> None:
    """The main demo (`make demo`): probe verdict, a lab, routers, containers, traffic, tear-down.

    With --overlay (the default) every host runs a router joined to its underlay
    neighbours, gets one container, and the demo shows `status connections`, a
    container ping matrix (relayed where the topology is a line), iperf3 throughput
    and one frame of `weave-fdp top`.

    The lab is always removed at the end, also on error or Ctrl-C.

    \b
    Example:
      weave-fdp lab demo --topology line
    """
    lab = Lab(prefix=prefix, hosts=hosts, topology=topology,  # bad options fail before anything runs
              containers=1 if overlay else 0)
    out = console()
    out.rule("[bold]weave-fdp demo")
    for line in _probe_lines():
        style = "green" if ": available" in line else ("yellow" if "not available" in line else "red")
        out.print(f"[{style}]{line}[/]")
    with _sigterm_as_interrupt():
        built = False
        try:
            t0 = time.monotonic()
            with _progress(f"lab {prefix}") as progress:
                lab.up(progress=progress)
            built = True
            out.print(f"lab {prefix} built in {time.monotonic() - t0:.2f} s")
            out.print(_hosts_table(lab))
            t1 = time.monotonic()
            reach = lab.reachability()
            out.print(_reach_table(lab, reach))
            ok = reach == lab.expected_reachability()
            out.print(f"reachability measured in {time.monotonic() - t1:.2f} s: "
                      + ("[green]matches the topology[/]" if ok else "[red]does NOT match the topology[/]"))
            if not ok:
                raise FdpError("the lab's underlay reachability does not match its topology")
            if overlay:
                run_overlay_demo(lab, out)
        finally:
            if built:
                with _progress(f"lab {prefix} down") as progress:
                    lab.down(progress=progress)
                out.print(f"lab {prefix} removed")


COMMANDS = [lab_group]
