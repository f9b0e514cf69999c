"""``weave-fdp setup``: install the systemd unit and the CNI plugin."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from weave_fdp.errors import UsageError


@click.command()
@click.argument("peers", nargs=-1)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="Install under this directory instead of / (for images and tests).")
@click.option("--cni-conf", is_flag=True, help="Also install a CNI network configuration "
              "(/etc/cni/net.d/10-weave-fdp.conflist, IPAM by the router), unless one is there.")
@click.option("--no-enable", is_flag=True, help="Do not run systemctl (only install the files).")
def setup(peers: tuple[str, ...], root: Path, cni_conf: bool, no_enable: bool) -> None:
    """Install weave-fdp as a service: the systemd unit (router in the foreground,
    restarted on failure, after the network is online), its environment file with PEERS
    as the first direct peers, and the CNI plugin in /opt/cni/bin.

    \b
    Examples:
      weave-fdp setup 192.0.2.1 192.0.2.2
      weave-fdp setup --cni-conf --no-enable
      weave-fdp setup --root /tmp/image --no-enable
    """
    from weave_fdp.router.config import parse_peer_address
    from weave_fdp.service import systemd

    for p in peers:
        parse_peer_address(p)
    exe = shutil.which("weave-fdp") or str(Path(sys.executable).parent / "weave-fdp")
    if not Path(exe).exists():
        raise UsageError("cannot find the weave-fdp program to put in the unit", fix="run scripts/install.sh first")
    exe = str(Path(exe).absolute())
    for item in systemd.install(root, exe, list(peers), cni_conf=cni_conf):
        click.echo(f"{'installed' if item.changed else 'unchanged'} {item.what}: {item.path}")
    if no_enable or root.resolve() != Path("/"):
        return
    if not systemd.systemd_running():
        click.echo("systemd is not running here (PID 1 is something else): start the router with "
                   "`weave-fdp launch` or your supervisor's equivalent of the unit's ExecStart")
        return
    click.echo(f"{systemd.UNIT_NAME}: {systemd.enable_now()}")


COMMANDS = [setup]
