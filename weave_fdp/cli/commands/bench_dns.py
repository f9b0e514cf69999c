"""``weave-fdp bench dns``: weaveDNS against dnsmasq (dnsperf), and attach-to-resolve time.

A subcommand of the ``bench`` group (bench.py adds it; no top-level command of its own).
"""

from __future__ import annotations

import click

from weave_fdp.cli.output import err_console, json_option, print_json, run_interruptible


@click.command("dns")
@click.option("--names", default=100, show_default=True, help="Names served by both servers.")
@click.option("--rounds", default=3, show_default=True, help="Max-qps and fixed-load runs per server (interleaved).")
@click.option("--seconds", default=5.0, show_default=True, help="Seconds per dnsperf run.")
@click.option("--search-steps", default=6, show_default=True,
              help="Bisection steps per server for the highest rate with p99 < 5 ms.")
@click.option("--search-seconds", default=3.0, show_default=True, help="Seconds per bisection step.")
@click.option("--placement", type=click.Choice(["both", "pinned", "unpinned"]), default="both", show_default=True,
              help="pinned: dnsperf on CPU 0, the servers on CPU 1; unpinned: the scheduler places them.")
@click.option("--attaches", default=20, show_default=True, help="Containers timed from attach to resolve.")
@json_option
def dns_cmd(names: int, rounds: int, seconds: float, search_steps: int, search_seconds: float, placement: str,
            attaches: int, as_json: bool) -> None:
    """weaveDNS beside dnsmasq (same names, same path, dnsperf in a container) and the time
    from attach on one host until the name resolves on another.

    For each placement (pinned, unpinned): the load average, max qps of both (median of
    ROUNDS), p50/p99 of both at half of dnsmasq's max qps (ROUNDS runs each, interleaved),
    the highest rate each holds with p99 < 5 ms (a bisection of SEARCH-STEPS short runs),
    and the floor judged both ways: (a) weaveDNS's p99 at 0.5x dnsmasq's max qps is under
    5 ms, (b) weaveDNS's highest rate with p99 < 5 ms is at least 0.5x dnsmasq's max qps.
    Then attach-to-resolve median and p99. Everything runs in a lab torn down at the end,
    also on Ctrl-C.

    \b
    Example:
      weave-fdp bench dns
      weave-fdp bench dns --rounds 5 --seconds 10 --placement unpinned --json
    """
    from weave_fdp.bench import dns

    echo = None if as_json else (lambda s: err_console().print(s, markup=False, soft_wrap=True))
    opts = dns.Options(names=names, rounds=rounds, seconds=seconds, attaches=attaches, search_steps=search_steps,
                       search_seconds=search_seconds,
                       placements=dns.PLACEMENTS if placement == "both" else (placement,))
    res = run_interruptible(lambda: dns.run(opts, echo=echo), "the lab of this run was torn down")
    if as_json:
        print_json(res)
        return
    meta, at = res["meta"], res["attach_to_resolve"]
    click.echo(f"load average {' '.join(str(x) for x in meta['load_before'])} before, "
               f"{' '.join(str(x) for x in meta['load_after_dnsperf'])} after dnsperf ({meta['cpus']} CPUs); "
               f"weaveDNS snapshots built while dnsperf ran: {meta['snapshots_built_during_dnsperf']}")
    for name, pl in res["placements"].items():
        mq, fx, fl, fs, se = pl["max_qps"], pl["fixed_load"], pl["floor"], pl["floor_by_search"], pl["search"]
        click.echo(f"[{name}] load {' '.join(str(x) for x in pl['load_before'])} before, "
                   f"{' '.join(str(x) for x in pl['load_after'])} after")
        click.echo(f"[{name}] max qps (median of {meta['rounds']}): weaveDNS {mq['weave']['median']} "
                   f"{mq['weave']['runs']}, dnsmasq {mq['dnsmasq']['median']} {mq['dnsmasq']['runs']}, "
                   f"ratio {pl['ratio_weave_to_dnsmasq']}")
        for k in ("weave", "dnsmasq"):
            click.echo(f"[{name}] at {fx['qps']} qps: {k:<8} achieved {fx[k]['qps']}, p50 {fx[k]['p50_ms']} ms, "
                       f"p99 {fx[k]['p99_ms']} ms (runs {fx[k]['p99_runs_ms']}), lost {fx[k]['lost']:.0f} "
                       f"(full buffers: client {fx[k]['client_drops']}, server {fx[k]['server_drops']})")
        click.echo(f"[{name}] highest rate with p99 < 5 ms ({meta['search_steps']} steps): weaveDNS "
                   f"{se['weave']['best_qps']}, dnsmasq {se['dnsmasq']['best_qps']}, "
                   f"ratio {fs['best_ratio_weave_to_dnsmasq']}")
        click.echo(f"[{name}] floor (a) ({fl['rule']}): {'MET' if fl['ok'] else 'NOT MET'}: weaveDNS carried "
                   f"{fl['weave_qps']} qps = {fl['weave_share_of_dnsmasq_max']}x dnsmasq's max {fl['dnsmasq_max_qps']} "
                   f"with p99 {fl['weave_p99_ms']} ms (dnsmasq {fl['dnsmasq_p99_ms']} ms at the same rate, "
                   f"ratio {fl['p99_ratio_weave_to_dnsmasq']})" + (f"; {fl['why_not']}" if fl["why_not"] else ""))
        click.echo(f"[{name}] floor (b) ({fs['rule']}): {'MET' if fs['ok'] else 'NOT MET'}: weaveDNS "
                   f"{fs['weave_best_qps']} qps = {fs['weave_best_share_of_dnsmasq_max']}x dnsmasq's max "
                   f"(target {fs['target_qps']})")
    click.echo(f"attach -> resolves on another host ({at['runs']} runs): from attach start median "
               f"{at['from_attach_start_ms']['median']} ms, p99 {at['from_attach_start_ms']['p99']} ms; "
               f"from the name's addition median {at['from_name_added_ms']['median']} ms, "
               f"p99 {at['from_name_added_ms']['p99']} ms")
