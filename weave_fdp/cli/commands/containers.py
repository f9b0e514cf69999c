"""Container commands: attach, detach, ps."""

from __future__ import annotations

import click

from weave_fdp.cli.output import print_json
from weave_fdp.errors import UsageError
from weave_fdp.router.client import RouterClient


def _split(args: tuple[str, ...]) -> tuple[list[str], str]:
    if not args:
        raise UsageError("no target given", fix="e.g. weave-fdp attach 10.32.1.1/12 netns:web1")
    return list(args[:-1]), args[-1]


@click.command()
@click.argument("args", nargs=-1, metavar="[ADDR...] TARGET")
@click.option("--no-multicast-route", is_flag=True, help="Do not route 224.0.0.0/4 over weave.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def attach(args: tuple[str, ...], no_multicast_route: bool, as_json: bool) -> None:
    """Attach TARGET (netns:NAME, pid:PID, container) to the weave network; print its address.

    \b
    ADDR is [ip:]CIDR (net:CIDR and net:default need IPAM). Attaching twice is harmless.
    Examples:
      weave-fdp attach 10.32.1.1/12 netns:web1
      weave-fdp attach ip:10.32.5.9/12 pid:4242
    """
    addrs, target = _split(args)
    res = RouterClient().call("attach", target=target, addrs=addrs, multicast_route=not no_multicast_route)
    if as_json:
        print_json(res)
    else:
        click.echo(" ".join(c.split("/")[0] for c in res["cidrs"]))


@click.command()
@click.argument("args", nargs=-1, metavar="[ADDR...] TARGET")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def detach(args: tuple[str, ...], as_json: bool) -> None:
    """Detach TARGET from the weave network (only ADDRs when given).

    \b
    Example:
      weave-fdp detach netns:web1
    """
    addrs, target = _split(args)
    res = RouterClient().call("detach", target=target, addrs=addrs)
    if as_json:
        print_json(res)
    else:
        click.echo(" ".join(c.split("/")[0] for c in res["cidrs"]) if not res["removed"] else f"{target} detached")


@click.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ps(targets: tuple[str, ...], as_json: bool) -> None:
    """List attached containers: id, MAC, addresses (like Weave's ps).

    \b
    Example:
      weave-fdp ps
    """
    rows = RouterClient().call("ps", targets=list(targets))
    if as_json:
        print_json(rows)
        return
    for r in rows:
        click.echo(f"{r['container']} {r['mac']} {' '.join(r['cidrs'])}")


COMMANDS = [attach, detach, ps]
