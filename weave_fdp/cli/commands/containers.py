"""Container commands: attach, detach, ps."""

from __future__ import annotations

import os

import click

from weave_fdp.cli.output import print_json
from weave_fdp.errors import UsageError
from weave_fdp.router.client import RouterClient
from weave_fdp.router.dns.names import check_name


def _engine() -> dict[str, str]:
    """The engine socket this shell points at (DOCKER_HOST), for container names and ids."""
    host = os.environ.get("DOCKER_HOST")
    return {"docker_host": host} if host else {}


def _split(args: tuple[str, ...]) -> tuple[list[str], str]:
    if not args:
        raise UsageError("no target given", fix="e.g. weave-fdp attach 10.32.1.1/12 netns:web1")
    return list(args[:-1]), args[-1]


@click.command(context_settings={"help_option_names": ["--help"]})   # -h is the DNS name, as in Weave
@click.argument("args", nargs=-1, metavar="[ADDR...] TARGET")
@click.option("--no-multicast-route", is_flag=True, help="Do not route 224.0.0.0/4 over weave.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for IPAM (consensus, space from peers) before failing with the reason.")
@click.option("-h", "--hostname", metavar="FQDN", help="weaveDNS name (default: the namespace/container name).")
@click.option("--name", help="weaveDNS name in the domain (e.g. web: web.weave.local).")
@click.option("--without-dns", is_flag=True, help="No weaveDNS name, resolver left alone.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def attach(args: tuple[str, ...], no_multicast_route: bool, timeout: float, hostname: str | None,
           name: str | None, without_dns: bool, as_json: bool) -> None:
    """Attach TARGET (netns:NAME, pid:PID, container) to the weave network; print its addresses.

    \b
    ADDR is CIDR, ip:CIDR, net:CIDR or net:default; with none, IPAM gives an address from
    the default subnet. Prints the address of each ADDR, one per line. Attaching twice is
    harmless: the same target gets the same addresses back. The target's name (-h, --name,
    else the namespace or container name) goes into weaveDNS and its resolver points at
    weaveDNS (docs/DNS.md), unless --without-dns. A container is a Docker/Podman name or id,
    looked up through the engine's API socket (DOCKER_HOST=unix://..., else the default
    sockets), or a namespace path (/run/netns/NAME, /proc/PID/ns/net).
    Examples:
      weave-fdp attach netns:web1
      DOCKER_HOST=unix:///run/podman/podman.sock weave-fdp attach web1
      weave-fdp attach net:10.32.5.0/24 ip:10.32.9.9/12 pid:4242
      weave-fdp attach 10.32.1.1/12 netns:web1
      weave-fdp attach ip:10.32.5.9/12 pid:4242 -h api.weave.local
    """
    addrs, target = _split(args)
    if hostname is not None:
        check_name(hostname, "-h")          # syntax before anything is attached (the domain: the router's)
    if name is not None:
        check_name(name, "--name")
    res = RouterClient(timeout=timeout + 10).call("attach", target=target, addrs=addrs, timeout=timeout,
                                                  multicast_route=not no_multicast_route, hostname=hostname,
                                                  name=name, without_dns=without_dns, **_engine())
    if as_json:
        print_json(res)
    else:
        for c in res.get("added", res["cidrs"]):
            click.echo(c.split("/")[0])


@click.command()
@click.argument("args", nargs=-1, metavar="[ADDR...] TARGET")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def detach(args: tuple[str, ...], as_json: bool) -> None:
    """Detach TARGET from the weave network (only ADDRs when given); print the addresses removed.

    \b
    ADDR is CIDR, ip:CIDR, net:CIDR (every address in that subnet) or net:default.
    IPAM frees the addresses at once. Examples:
      weave-fdp detach netns:web1
      weave-fdp detach net:10.32.5.0/24 netns:web1
    """
    addrs, target = _split(args)
    res = RouterClient().call("detach", target=target, addrs=addrs, **_engine())
    if as_json:
        print_json(res)
    else:
        for c in res.get("released", []):
            click.echo(c.split("/")[0])


@click.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ps(targets: tuple[str, ...], as_json: bool) -> None:
    """List attached containers: id, MAC, addresses (like Weave's ps).

    The first line is the host's bridge (weave:expose); containers known to Docker or
    Podman show their 12-digit id. --json lists the containers only.

    \b
    Examples:
      weave-fdp ps
      weave-fdp ps web1 netns:db1
    """
    rows = RouterClient().call("ps", targets=list(targets), expose=not as_json, **_engine())
    if as_json:
        print_json(rows)
        return
    for r in rows:
        click.echo(f"{r['container']} {r['mac']} {' '.join(r['cidrs'])}".rstrip())


@click.command(context_settings={"help_option_names": ["--help"]})   # -h is the FQDN, as in Weave
@click.argument("addrs", nargs=-1, metavar="[ADDR...]")
@click.option("-h", "fqdn", metavar="FQDN", help="Name of this host in weaveDNS.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for IPAM.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def expose(addrs: tuple[str, ...], fqdn: str | None, timeout: float, as_json: bool) -> None:
    """Give this host addresses on the weave network (from IPAM without ADDR); print them.

    \b
    ADDR as for attach. Traffic from exposed subnets leaving the host is masqueraded
    (nftables table ip weave_fdp_expose). Running it twice changes nothing.
    Examples:
      weave-fdp expose
      weave-fdp expose net:10.32.5.0/24 -h host1.weave.local
    """
    res = RouterClient(timeout=timeout + 10).call("expose", addrs=list(addrs), fqdn=fqdn, timeout=timeout)
    if as_json:
        print_json(res)
    else:
        for c in res["added"]:
            click.echo(c.split("/")[0])


@click.command()
@click.argument("addrs", nargs=-1, metavar="[ADDR...]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hide(addrs: tuple[str, ...], as_json: bool) -> None:
    """Remove what expose added (only ADDRs when given); print the addresses removed.

    \b
    Example:
      weave-fdp hide
    """
    res = RouterClient().call("hide", addrs=list(addrs))
    if as_json:
        print_json(res)
    else:
        for c in res["removed"]:
            click.echo(c.split("/")[0])


COMMANDS = [attach, detach, ps, expose, hide]
