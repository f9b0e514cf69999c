"""``weave-fdp bench dns``: weaveDNS against dnsmasq (dnsperf), and attach-to-resolve time.

A subcommand of the ``bench`` group (bench.py adds it; no top-level command of its own).
"""

from __future__ import annotations

import click

from weave_fdp.cli.output import err_console, json_option, print_json, run_interruptible


@click.command("dns")
@click.option("--names", default=100, show_default=True, help="Names served by both servers.")
@click.option("--rounds", default=3, show_default=True, help="Max-qps runs per server (interleaved).")
@click.option("--seconds", default=5.0, show_default=True, help="Seconds per dnsperf run.")
@click.option("--attaches", default=20, show_default=True, help="Containers timed from attach to resolve.")
@json_option
def dns_cmd(names: int, rounds: int, seconds: float, attaches: int, as_json: bool) -> None:
    """weaveDNS beside dnsmasq (same names, same path, dnsperf in a container) and the time
    from attach on one host until the name resolves on another.

    Prints the load average, max qps of both (median of ROUNDS), p50/p99 of both at half
    of dnsmasq's max qps (ROUNDS runs each, interleaved), the verdict on the floor
    (weaveDNS carries 0.5x dnsmasq's max qps with p99 < 5 ms, dnsmasq's p99 beside it)
    and attach-to-resolve median and p99. Everything runs in a lab torn down at the end, also on Ctrl-C.

    \b
    Example:
      weave-fdp bench dns
      weave-fdp bench dns --rounds 5 --seconds 10 --json
    """
    from weave_fdp.bench import dns

    echo = None if as_json else (lambda s: err_console().print(s, markup=False))
    opts = dns.Options(names=names, rounds=rounds, seconds=seconds, attaches=attaches)
    res = run_interruptible(lambda: dns.run(opts, echo=echo), "the lab of this run was torn down")
    if as_json:
        print_json(res)
        return
    mq, fx, at, fl, meta = (res["max_qps"], res["fixed_load"], res["attach_to_resolve"], res["floor"],
                            res["meta"])
    click.echo(f"load average {' '.join(str(x) for x in meta['load_before'])} before, "
               f"{' '.join(str(x) for x in meta['load_after_dnsperf'])} after dnsperf ({meta['cpus']} CPUs)")
    click.echo(f"max qps (median of {meta['rounds']}): weaveDNS {mq['weave']['median']} "
               f"{mq['weave']['runs']}, dnsmasq {mq['dnsmasq']['median']} {mq['dnsmasq']['runs']}, "
               f"ratio {res['ratio_weave_to_dnsmasq']}")
    for k in ("weave", "dnsmasq"):
        click.echo(f"at {fx['qps']} qps: {k:<8} achieved {fx[k]['qps']}, p50 {fx[k]['p50_ms']} ms, "
                   f"p99 {fx[k]['p99_ms']} ms (runs {fx[k]['p99_runs_ms']}), lost {fx[k]['lost']:.0f}")
    click.echo(f"floor ({fl['rule']}): {'MET' if fl['ok'] else 'NOT MET'}: weaveDNS carried {fl['weave_qps']} qps "
               f"= {fl['weave_share_of_dnsmasq_max']}x dnsmasq's max {fl['dnsmasq_max_qps']} with p99 "
               f"{fl['weave_p99_ms']} ms (dnsmasq {fl['dnsmasq_p99_ms']} ms at the same rate, "
               f"ratio {fl['p99_ratio_weave_to_dnsmasq']})" + (f"; {fl['why_not']}" if fl["why_not"] else ""))
    click.echo(f"attach -> resolves on another host ({at['runs']} runs): from attach start median "
               f"{at['from_attach_start_ms']['median']} ms, p99 {at['from_attach_start_ms']['p99']} ms; "
               f"from the name's addition median {at['from_name_added_ms']['median']} ms, "
               f"p99 {at['from_name_added_ms']['p99']} ms")
