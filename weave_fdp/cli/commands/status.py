"""`status` and its subcommands: the router's report, formatted (cli/status_format.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from weave_fdp.cli import status_format as fmt
from weave_fdp.cli.output import json_option, print_json
from weave_fdp.errors import FdpError
from weave_fdp.router.client import RouterClient


def want_json(ctx: click.Context, as_json: bool) -> bool:
    """``--json`` given to the subcommand or to ``status`` itself (``status --json peers``)."""
    return as_json or bool((ctx.obj or {}).get("status_json"))


def show(ctx: click.Context, as_json: bool, data: Any, lines: Callable[[Any], list[str]]) -> None:
    """``data`` as JSON (``--json``), else as the lines ``lines(data)`` makes of it."""
    if want_json(ctx, as_json):
        print_json(data)
        return
    for line in lines(data):
        click.echo(line)


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
    show(ctx, as_json, rep["peers"], lambda _peers: fmt.peer_lines(rep))


@status.command("connections")
@json_option
@click.pass_context
def status_connections(ctx: click.Context, as_json: bool) -> None:
    """Direct connections: state, mode (fastdp/sleeve) and why, MTU; failures and retries.

    \b
    Example:
      weave-fdp status connections
    """
    show(ctx, as_json, RouterClient().call("report")["connections"],
         lambda conns: [fmt.connection_line(c) for c in conns])


@status.command("ipam")
@json_option
@click.pass_context
def status_ipam(ctx: click.Context, as_json: bool) -> None:
    """How the IP range is divided among peers, and which of them are unreachable.

    \b
    Example:
      weave-fdp status ipam
    """
    show(ctx, as_json, RouterClient().call("report").get("ipam"), _ipam_lines)


@status.command("targets")
@json_option
@click.pass_context
def status_targets(ctx: click.Context, as_json: bool) -> None:
    """The direct peers this router keeps connecting to (launch/connect, persisted).

    \b
    Example:
      weave-fdp status targets
    """
    show(ctx, as_json, RouterClient().call("report")["targets"], list)


def _ipam_lines(ipam: Any) -> list[str]:
    if not ipam:
        raise FdpError("IPAM is off in this router (launched with --ipalloc-range \"\")",
                       fix="launch with an --ipalloc-range to use IPAM")
    return fmt.ipam_lines(ipam)


COMMANDS = [status]
