"""weaveDNS commands: dns-add, dns-remove, dns-lookup, status dns (Weave's grammar and shapes)."""

from __future__ import annotations

from typing import Any

import click

from weave_fdp.cli.commands.status import status, want_json
from weave_fdp.cli.output import json_option, print_json
from weave_fdp.cli.status_format import answered_line
from weave_fdp.errors import UsageError
from weave_fdp.router.client import RouterClient
from weave_fdp.router.dns.names import check_ipv4

NO_H_HELP = {"help_option_names": ["--help"]}   # -h is FQDN here, as in Weave


def split_dns_args(args: tuple[str, ...]) -> tuple[list[str], str | None]:
    """``[IP...] [TARGET]`` -> (addresses, target): every item that is an IPv4 address is
    an address; one other item, last, is the target."""
    addrs: list[str] = []
    target = None
    for i, a in enumerate(args):
        try:
            addrs.append(check_ipv4(a))
            continue
        except UsageError:
            pass
        if i != len(args) - 1:
            raise UsageError(f"{a!r} is neither an IPv4 address nor the last argument (the target)",
                             fix="write [IP...] TARGET, e.g. 10.32.1.5 netns:web1")
        target = a
    return addrs, target


def _dns_call(op: str, args: tuple[str, ...], hostname: str | None) -> Any:
    addrs, target = split_dns_args(args)
    if target is None and hostname is None:
        raise UsageError("give a TARGET or -h FQDN", fix=f"e.g. weave-fdp {op} 10.32.1.5 -h db.weave.local")
    from weave_fdp.cli.commands.containers import _engine

    return RouterClient().call(op, addrs=addrs, target=target, hostname=hostname, **_engine())


@click.command("dns-add", context_settings=NO_H_HELP)
@click.argument("args", nargs=-1, metavar="[IP...] [TARGET]")
@click.option("-h", "--hostname", metavar="FQDN", help="The name (default: the target's name).")
@json_option
def dns_add(args: tuple[str, ...], hostname: str | None, as_json: bool) -> None:
    """Add a weaveDNS name for TARGET's addresses (or for IPs that are not a container).

    \b
    Examples:
      weave-fdp dns-add netns:web1                       web1.weave.local -> its addresses
      weave-fdp dns-add 10.32.1.9 netns:web1 -h api      api.weave.local -> 10.32.1.9
      weave-fdp dns-add 10.32.7.7 -h db.weave.local      a name for something outside weave
    """
    res = _dns_call("dns-add", args, hostname)
    if as_json:
        print_json(res)
    else:
        click.echo(f"{res['name']} {' '.join(res['addrs'])}")


@click.command("dns-remove", context_settings=NO_H_HELP)
@click.argument("args", nargs=-1, metavar="[IP...] [TARGET]")
@click.option("-h", "--hostname", metavar="FQDN", help="Only this name.")
@json_option
def dns_remove(args: tuple[str, ...], hostname: str | None, as_json: bool) -> None:
    """Remove weaveDNS names added on this host (all of TARGET's, or only IPs / -h FQDN).

    \b
    Examples:
      weave-fdp dns-remove netns:web1
      weave-fdp dns-remove 10.32.7.7 -h db.weave.local
    """
    res = _dns_call("dns-remove", args, hostname)
    if as_json:
        print_json(res)
    else:
        for r in res["removed"]:
            click.echo(f"{r['name']} {r['addr']}")


@click.command("dns-lookup")
@click.argument("name")
@json_option
def dns_lookup(name: str, as_json: bool) -> None:
    """The addresses of NAME (in the weaveDNS domain), as containers get them.

    \b
    Example:
      weave-fdp dns-lookup web
    """
    res = RouterClient().call("dns-lookup", name=name)
    if as_json:
        print_json(res)
    else:
        for a in res["addrs"]:
            click.echo(a)


def status_dns_lines(section: dict[str, Any]) -> list[str]:
    """Weave's ``status dns`` shape: name, container, address, origin peer (one line per entry)."""
    domain = "." + section["domain"]
    rows = []
    for e in section["entries"]:
        name = e["name"][: -len(domain)] if e["name"].lower().endswith(domain.lower()) else e["name"]
        origin = f"{e['origin']}({e['origin_nickname']})" if e.get("origin_nickname") else e["origin"]
        rows.append((name, e["container"], e["address"], origin))
    if not rows:
        return []
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]


@status.command("dns")
@json_option
@click.pass_context
def status_dns(ctx: click.Context, as_json: bool) -> None:
    """weaveDNS entries of the whole network: name, container, address, origin peer.

    \b
    Example:
      weave-fdp status dns
    """
    section = RouterClient().call("report").get("dns")
    if section is None:
        raise UsageError("weaveDNS is not running on this router (launched with --no-dns)",
                         fix="launch it without --no-dns")
    if want_json(ctx, as_json):
        print_json(section["entries"])
        return
    for line in status_dns_lines(section):
        click.echo(line)
    line = answered_line(section)
    if line:
        click.echo(line)


COMMANDS = [dns_add, dns_remove, dns_lookup]
