"""Router lifecycle commands: launch, stop, reset, connect, forget, rmpeer, prime, report, version.

`status` is in status.py, the `bench` group in bench.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from weave_fdp import paths
from weave_fdp.cli.output import json_option, print_json
from weave_fdp.errors import AlreadyExists, ExitCode, FdpError, RouterNotRunning, UsageError
from weave_fdp.router.client import RouterClient
from weave_fdp.router.config import DEFAULT_CONN_LIMIT, DEFAULT_METRICS_ADDR, DEFAULT_PORT, RouterConfig
from weave_fdp.router.logfile import LOG_ENV

#: seconds for the background router to answer (WEAVE_FDP_LAUNCH_TIMEOUT overrides: VMs under
#: software emulation start a router in minutes)
LAUNCH_TIMEOUT = 20.0
STOP_WAIT_S = 60.0   # a router on a slow machine (emulated VM) takes long to detach and unpin


def _split_csv(values: tuple[str, ...]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


@click.command()
@click.argument("peers", nargs=-1)
@click.option("--name", help="Peer name (MAC form, e.g. 7e:aa:bb:cc:dd:ee, or Weave's short forms such as ::1); "
              "default: persisted random.")
@click.option("--nickname", help="Nickname shown next to the peer name (default: hostname).")
@click.option("--password", envvar="WEAVE_PASSWORD", help="Encrypt and authenticate the mesh (or WEAVE_PASSWORD).")
@click.option("--trusted-subnets", multiple=True, help="CIDR,... of underlay networks trusted without encryption.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="TCP control port.")
@click.option("--conn-limit", type=int, default=DEFAULT_CONN_LIMIT, show_default=True,
              help="Maximum number of connections.")
@click.option("--no-discovery", is_flag=True, help="Dial only the peers given, not those learned from peers.")
@click.option("--no-fastdp", is_flag=True, help="Do not use the in-kernel fast datapath (sleeve only).")
@click.option("--no-dns", is_flag=True, help="Do not run weaveDNS.")
@click.option("--dns-domain", default="weave.local.", show_default=True, help="Domain weaveDNS answers for.")
@click.option("--dns-ttl", type=int, default=1, show_default=True, help="TTL of weaveDNS answers (seconds).")
@click.option("--dns-listen-address", default="169.254.53.53", show_default=True, metavar="IP[:PORT]",
              help="Address weaveDNS serves on (put on the weave bridge; containers are routed to it).")
@click.option("--dns-rate-limit", type=float, default=1000.0, show_default=True,
              help="DNS queries per second per source address (0: no limit).")
@click.option("--ipalloc-range", default="10.32.0.0/12", show_default=True,
              help='Range IPAM allocates from ("" turns IPAM off).')
@click.option("--ipalloc-default-subnet", help="Subnet of attach with no address (default: the range).")
@click.option("--ipalloc-init", help="IPAM start: consensus[=N] (default, N = peers named here + 1), "
              "seed=PEERNAME,... or observer.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Persistent state (default per host).")
@click.option("--log-level", "router_log_level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Router log level.")
@click.option("--metrics-addr", metavar="HOST:PORT", envvar="WEAVE_STATUS_ADDR",
              help=f"Serve Prometheus metrics on http://HOST:PORT/metrics (or WEAVE_STATUS_ADDR); "
                   f"default {DEFAULT_METRICS_ADDR}, 'off' for none.")
@click.option("--mtu", type=int, envvar="WEAVE_MTU",
              help="MTU of the overlay (container interfaces, bridge, VXLAN device) in bytes "
                   "(or WEAVE_MTU); default: the underlay's MTU minus 50.")
@click.option("--resume", is_flag=True,
              help="Keep the saved list of direct peers (as changed by connect/forget) instead of "
                   "setting it to PEERS; PEERS then only seed it when none was saved.")
@click.option("--foreground", is_flag=True, help="Run in this process (for systemd or a terminal).")
def launch(peers: tuple[str, ...], name: str | None, nickname: str | None, password: str | None,
           trusted_subnets: tuple[str, ...], port: int, conn_limit: int, no_discovery: bool,
           no_fastdp: bool, no_dns: bool, dns_domain: str, dns_ttl: int, dns_listen_address: str,
           dns_rate_limit: float, ipalloc_range: str, ipalloc_default_subnet: str | None,
           ipalloc_init: str | None,
           state_dir: Path | None, router_log_level: str, metrics_addr: str | None, mtu: int | None,
           resume: bool, foreground: bool) -> None:
    """Start this host's router and join PEERS (HOST[:PORT]); prints the peer name.

    PEERS become the list of direct peers, replacing the saved one; with --resume the
    saved list is kept (what a restart does). WEAVE_PASSWORD, WEAVE_MTU and
    WEAVE_NO_FASTDP (any non-empty value) stand for --password, --mtu and --no-fastdp.

    \b
    Examples:
      weave-fdp launch                         first host
      weave-fdp launch 192.0.2.1               join it (its peers are discovered)
      weave-fdp launch --resume                again, with the peers it had
      WEAVE_PASSWORD=s3cret weave-fdp launch 192.0.2.1
      weave-fdp launch --name ::1 --mtu 1400 --metrics-addr 0.0.0.0:6782 192.0.2.1
    """
    no_fastdp = no_fastdp or bool(os.environ.get("WEAVE_NO_FASTDP"))
    metrics_optional = metrics_addr is None
    if metrics_addr is None:
        metrics_addr = DEFAULT_METRICS_ADDR
    elif metrics_addr.strip().lower() in ("", "off", "none"):
        metrics_addr = None
    cfg = RouterConfig(peers=list(peers), name=name, nickname=nickname, password=password or None,
                       trusted_subnets=_split_csv(trusted_subnets), port=port, conn_limit=conn_limit,
                       discovery=not no_discovery, no_fastdp=no_fastdp, no_dns=no_dns,
                       dns_domain=dns_domain, dns_ttl=dns_ttl, dns_listen_address=dns_listen_address,
                       dns_rate_limit=dns_rate_limit,
                       ipalloc_range=ipalloc_range, ipalloc_default_subnet=ipalloc_default_subnet,
                       ipalloc_init=ipalloc_init, state_dir=state_dir,
                       log_level=router_log_level, metrics_addr=metrics_addr,
                       metrics_optional=metrics_optional, resume=resume, mtu=mtu).validate()
    client = RouterClient(timeout=3)
    if client.running():
        raise AlreadyExists(f"the router is already running here (peer {_peer_name(client)})",
                            fix="stop it first with: weave-fdp stop")
    if foreground:
        from weave_fdp.router.daemon import run_foreground

        run_foreground(cfg)
        return
    click.echo(_launch_background(cfg))


def _peer_name(client: RouterClient) -> str:
    try:
        return str(client.call("report")["router"]["name"])
    except FdpError:
        return "?"


def _launch_background(cfg: RouterConfig) -> str:
    rundir = paths.runtime_dir()
    rundir.mkdir(parents=True, exist_ok=True)
    log_path = rundir / "router.log"
    env = dict(os.environ)
    raw = cfg.to_dict()
    raw["password"] = cfg.password
    env["WEAVE_FDP_ROUTER_CONFIG"] = json.dumps(raw)
    env[LOG_ENV] = str(log_path)   # the router rotates it (router/logfile.py)
    with open(log_path, "ab") as logf:
        start_offset = logf.tell()
        proc = subprocess.Popen([sys.executable, "-m", "weave_fdp.router"], env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    client = RouterClient(timeout=2)
    timeout = _launch_timeout()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise _startup_error(log_path, start_offset, rc)
        try:
            rep = client.call("report")["router"]
        except RouterNotRunning:
            time.sleep(0.05)
        except FdpError:
            time.sleep(0.05)
        else:
            for note in rep.get("state_recovered") or []:   # damaged state files it recovered
                click.echo(f"warning: {note}", err=True)
            return str(rep["name"])
    proc.terminate()
    raise FdpError(f"the router did not answer within {timeout:g} s",
                   fix=f"see its log {log_path} (a slow machine: set WEAVE_FDP_LAUNCH_TIMEOUT=SECONDS)")


def _launch_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("WEAVE_FDP_LAUNCH_TIMEOUT", LAUNCH_TIMEOUT)))
    except ValueError:
        return LAUNCH_TIMEOUT


def _startup_error(log_path: Path, offset: int, rc: int) -> FdpError:
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    msg = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
    exc = FdpError(msg or f"the router exited with code {rc} during startup; see {log_path}")
    try:
        exc.exit_code = ExitCode(rc)
    except ValueError:
        pass
    return exc


@click.command()
def stop() -> None:
    """Stop this host's router (the fast datapath keeps its pinned state).

    \b
    Example:
      weave-fdp stop
    """
    _stop(RouterClient(timeout=5))


def _stop(client: RouterClient) -> None:
    """Ask the router to stop and wait until it is gone: `reset` must not remove the state of a
    router still running (a slow machine takes seconds to detach its programs)."""
    res = client.call("stop") or {}
    deadline = time.monotonic() + STOP_WAIT_S
    while client.running():
        if time.monotonic() > deadline:
            pid = res.get("pid", "?")
            raise FdpError(f"the router (pid {pid}) is still running {STOP_WAIT_S:g} s after it was asked to stop",
                           fix=f"kill {pid}, then run the command again")
        time.sleep(0.05)


@click.command()
def reset() -> None:
    """Stop the router (if running) and remove this host's programs, maps, devices, links and state.

    \b
    Example:
      weave-fdp reset
    """
    client = RouterClient(timeout=8)
    state = paths.state_dir()
    try:
        rep = client.call("report")
        state = Path(rep["router"].get("state_dir") or state)
        if rep.get("ipam"):
            res = client.call("ipam_handoff", timeout=3)
            if res.get("to"):
                click.echo(f"reset: IP space handed to {res['label']}"
                           + ("" if res.get("acknowledged") else " (not acknowledged: " + str(res.get("error")) + ")"))
        _stop(client)
    except RouterNotRunning:
        pass
    from weave_fdp.datapath.reset import reset_datapaths

    removed = reset_datapaths()
    if state.is_dir():
        shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(paths.runtime_dir(), ignore_errors=True)
    gone = removed["links"] + removed["pins"]
    click.echo(f"reset: removed {', '.join(gone)}" if gone else "reset: nothing to remove")


@click.command()
@click.argument("peers", nargs=-1)
@click.option("--replace", is_flag=True, help="Replace the list of direct peers instead of adding: the "
              "peers replaced are no longer dialed and the connections made to them are closed.")
def connect(peers: tuple[str, ...], replace: bool) -> None:
    """Add PEERS (HOST[:PORT]) to the direct peers the router keeps connected.

    \b
    Examples:
      weave-fdp connect 192.0.2.2 192.0.2.3:6783
      weave-fdp connect --replace 192.0.2.4
    """
    if not peers and not replace:
        raise UsageError("connect needs at least one peer", fix="e.g. weave-fdp connect 192.0.2.2")
    RouterClient().call("connect", peers=list(peers), replace=replace)


@click.command()
@click.argument("peers", nargs=-1, required=True)
def forget(peers: tuple[str, ...]) -> None:
    """Stop dialing PEERS (existing connections stay until they drop).

    \b
    Example:
      weave-fdp forget 192.0.2.2
    """
    res = RouterClient().call("forget", peers=list(peers))
    for u in res.get("unknown", []):
        click.echo(f"warning: {u} was not a direct peer", err=True)


@click.command()
@click.argument("peers", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rmpeer(peers: tuple[str, ...], as_json: bool) -> None:
    """Take over the IP address space of PEERS (name or nickname), peers that are gone for good.

    Refused for a peer that is reachable (reset it instead: it hands its space over).

    \b
    Example:
      weave-fdp rmpeer 7e:aa:bb:cc:dd:ee
    """
    res = RouterClient().call("rmpeer", peers=list(peers))
    if as_json:
        print_json(res)
        return
    for r in res:
        click.echo(f"{r['reclaimed']} IPs taken over from {r['label']}")


@click.command()
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for consensus.")
@json_option
def prime(timeout: float, as_json: bool) -> None:
    """Return once IPAM is ready (consensus reached or the ring received); fail saying why otherwise.

    \b
    Example:
      weave-fdp prime --timeout 60
    """
    res = RouterClient(timeout=timeout + 10).call("prime", timeout=timeout)
    if as_json:
        print_json(res)
    else:
        click.echo(res["status"])


@click.command()
@json_option
@click.option("-f", "--format", "template", help="Python format template over the report, "
              "e.g. '{router[name]} {router[nickname]}'.")
def report(as_json: bool, template: str | None) -> None:
    """The router's full state as JSON (or formatted with -f).

    \b
    Examples:
      weave-fdp report
      weave-fdp report -f '{router[name]} {router[nickname]}'
    """
    rep = RouterClient().call("report")
    if template:
        try:
            click.echo(template.format(**rep).replace("\\n", "\n"))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise UsageError(f"format template {template!r}: {exc!r} not in the report",
                             fix="see `weave-fdp report` for the keys") from None
        return
    print_json(rep)


@click.command()
@json_option
def version(as_json: bool) -> None:
    """Versions of this program and of the running router (as `weave version`).

    \b
    Example:
      weave-fdp version
    """
    from weave_fdp import __version__

    client = RouterClient(timeout=5)
    try:
        rep = client.call("report")
        router: dict[str, Any] | None = {"version": rep.get("version"), "pid": rep["router"].get("pid"),
                                         "name": rep["router"].get("name")}
    except RouterNotRunning:
        router = None
    info = {"weave-fdp": __version__, "python": sys.version.split()[0], "kernel": os.uname().release,
            "router": router}
    if as_json:
        print_json(info)
        return
    click.echo(f"weave-fdp {__version__}")
    click.echo(f"router {router['version']} (pid {router['pid']}, peer {router['name']})" if router
               else "router not running on this host")
    click.echo(f"python {info['python']}, kernel {info['kernel']}")


COMMANDS = [launch, stop, reset, connect, forget, rmpeer, prime, report, version]
