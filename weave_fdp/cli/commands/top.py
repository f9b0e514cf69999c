"""`weave-fdp top` (live dashboard) and `weave-fdp flows` (the flow table).

Both read only the router API's ``report`` (what `weave-fdp report --json`
prints), so they run in their own process without bcc, as any user the API
admits, and can replay a recorded report with --demo-file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

from weave_fdp.cli.output import console, print_json, print_json_line
from weave_fdp.errors import UsageError

@contextlib.contextmanager
def _stream_guard() -> Iterator[None]:
    """Streams end quietly with exit 0 on Ctrl-C or a closed pipe (`... --json | head`).

    click catches EPIPE itself and exits 1, so the pipe is handled here: point
    stdout at /dev/null so the interpreter's final flush cannot fail again.
    """
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


demo_option = click.option(
    "--demo-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Replay reports recorded with `weave-fdp report --json > FILE` (one report, a JSON array "
         "or JSON lines) instead of asking the router.",
)
interval_option = click.option(
    "--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, metavar="SECONDS",
    help="Time between samples.",
)


@click.command()
@click.option("--once", is_flag=True, help="Print one frame (every panel, full height) to stdout and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON snapshot per interval (JSON lines).")
@interval_option
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N frames (--json and live view; default: until q or Ctrl-C).")
@click.option("--flows", "n_flows", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="Flows in --once and --json output (0: all of them).")
@demo_option
def top(once: bool, as_json: bool, interval: float, count: int | None, n_flows: int,
        demo_file: str | None) -> None:
    """Live dashboard of this host's router: peers, connections, flows, drops.

    Full screen, refreshed every second: header (this peer, uptime, encryption,
    peers and connections by state and mode); connections with mode (and why
    when not fastdp), MTU, heartbeat RTT and rates; top flows by current rate;
    peers with routes and a minute of throughput; drops by reason; IPAM and DNS.
    Keys: q quit, s cycle the flow sort (rate, bytes, packets, recent),
    f filter by text (Enter applies, Esc clears), p pause. Fits 80x24 (panels
    collapse); wide screens get two columns and more detail.

    \b
    Example:
      weave-fdp top                         live view of this host's router
      weave-fdp top --once > frame.txt      one frame, for a bug report
      weave-fdp top --json --count 5 | jq .counts
      weave-fdp top --demo-file report.json replay a recorded report
    """
    from weave_fdp.dashboard import app
    from weave_fdp.dashboard.source import open_source

    if once and as_json:
        raise UsageError("--once and --json do not go together", fix="use --json --count 1 for one JSON frame")
    source = open_source(demo_file)
    limit = n_flows or None
    with _stream_guard():
        if as_json:
            for frame in app.iter_json(source, interval, count, limit):
                print_json_line(frame)
        elif once:
            app.run_once(source, console(), flows=n_flows or 10**9)
        else:
            app.run_live(source, interval, console(), count=count)


@click.command()
@click.option("--follow", "-F", is_flag=True, help="Keep printing flows that move (new or counters changed).")
@click.option("--peer", default=None, metavar="PEER", help="Only flows via this peer (name, nickname or short id).")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default=None, help="Only this protocol.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: one list; with --follow one flow per line (with rate and deltas).")
@interval_option
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --follow: stop after N samples.")
@demo_option
def flows(follow: bool, peer: str | None, proto: str | None, as_json: bool, interval: float,
          count: int | None, demo_file: str | None) -> None:
    """The datapath's flow table: MACs, 5-tuple, packets, bytes, path and via peer.

    Without --follow: every flow once, largest first. With --follow: then, every
    interval, each flow that is new or whose counters moved, with its rate.

    \b
    Example:
      weave-fdp flows                         the flow table now
      weave-fdp flows --peer host2 --proto tcp
      weave-fdp flows --follow --json | jq -c '{src_ip, dst_ip, rate}'
    """
    from weave_fdp.dashboard.flows import flow_line, iter_flow_batches
    from weave_fdp.dashboard.source import open_source

    source = open_source(demo_file)
    batches = iter_flow_batches(source, follow=follow, interval=interval, peer=peer, proto=proto, count=count)
    with _stream_guard():
        for _, batch in batches:
            if as_json and not follow:
                print_json(batch)
            elif as_json:
                for rec in batch:
                    print_json_line(rec)
            elif follow:
                for rec in batch:
                    click.echo(flow_line(rec))
            else:
                _print_flow_table(batch)


def _print_flow_table(batch: list[dict]) -> None:
    """The one-shot flow table (text)."""
    from rich.table import Table

    from weave_fdp.dashboard.fmt import fmt_bytes, fmt_count, fmt_endpoint

    t = Table(box=None, pad_edge=False, header_style="bold")
    for name, right in (("source", False), ("destination", False), ("proto", False), ("packets", True),
                        ("bytes", True), ("path", False), ("via", False)):
        t.add_column(name, justify="right" if right else "left", no_wrap=True, overflow="ellipsis")
    for r in batch:
        t.add_row(fmt_endpoint(r["src_ip"], r["sport"], mac=r["src_mac"]),
                  fmt_endpoint(r["dst_ip"], r["dport"], mac=r["dst_mac"]), r["proto"] or "n/a",
                  fmt_count(r["packets"]), fmt_bytes(r["bytes"]), r["path"] or "n/a", r["via_nickname"] or "n/a")
    if not batch:
        click.echo("no flows")
        return
    console().print(t)


COMMANDS = [top, flows]
