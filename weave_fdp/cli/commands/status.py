"""`status` and its subcommands: the router's report, formatted (cli/status_format.py)."""

from __future__ import annotations

import click

from weave_fdp.cli import status_format as fmt
from weave_fdp.cli.output import json_option, print_json
from weave_fdp.errors import FdpError
from weave_fdp.router.client import RouterClient


def want_json(ctx: click.Context, as_json: bool) -> bool:
    """``--json`` given to the subcommand or to ``status`` itself (``status --json peers``)."""
    return as_json or bool((ctx.obj or {}).get("status_json"))


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Router summary; `status peers|connections|targets` for details.

    \b
    Examples:
      weave-fdp status
      weave-fdp status connections --json
    """
    ctx.ensure_object(dict)
    ctx.obj["status_json"] = as_json
    if ctx.invoked_subcommand is not None:
        return
    rep = RouterClient().call("report")
    if as_json:
        print_json(fmt.summary(rep))
        return
    for line in fmt.summary_lines(rep):
        click.echo(line)


@status.command("peers")
@json_option
@click.pass_context
def status_peers(ctx: click.Context, as_json: bool) -> None:
    """Every peer and the connections it announces.

    \b
    Example:
      weave-fdp status peers
    """
    rep = RouterClient().call("report")
    if want_json(ctx, as_json):
        print_json(rep["peers"])
        return
    for line in fmt.peer_lines(rep):
        click.echo(line)


@status.command("connections")
@json_option
@click.pass_context
def status_connections(ctx: click.Context, as_json: bool) -> None:
    """Direct connections: state, mode (fastdp/sleeve) and why, MTU; failures and retries.

    \b
    Example:
      weave-fdp status connections
    """
    rep = RouterClient().call("report")
    if want_json(ctx, as_json):
        print_json(rep["connections"])
        return
    for c in rep["connections"]:
        click.echo(fmt.connection_line(c))


@status.command("ipam")
@json_option
@click.pass_context
def status_ipam(ctx: click.Context, as_json: bool) -> None:
    """How the IP range is divided among peers, and which of them are unreachable.

    \b
    Example:
      weave-fdp status ipam
    """
    rep = RouterClient().call("report")
    ipam = rep.get("ipam")
    if want_json(ctx, as_json):
        print_json(ipam)
        return
    if not ipam:
        raise FdpError("IPAM is off in this router (launched with --ipalloc-range \"\")",
                       fix="launch with an --ipalloc-range to use IPAM")
    for line in fmt.ipam_lines(ipam):
        click.echo(line)


@status.command("targets")
@json_option
@click.pass_context
def status_targets(ctx: click.Context, as_json: bool) -> None:
    """The direct peers this router keeps connecting to (launch/connect, persisted).

    \b
    Example:
      weave-fdp status targets
    """
    rep = RouterClient().call("report")
    if want_json(ctx, as_json):
        print_json(rep["targets"])
        return
    for t in rep["targets"]:
        click.echo(t)


COMMANDS = [status]
