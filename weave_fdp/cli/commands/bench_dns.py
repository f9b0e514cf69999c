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
@click.option("--weave-answers", type=click.Choice(["both", "kernel", "userspace"]), default="both",
              show_default=True,
              help="kernel: weaveDNS as launched (fastdp answers in the kernel what it can); userspace: "
                   "its answers in the kernel turned off; both: the two, interleaved with dnsmasq.")
@click.option("--attaches", default=20, show_default=True, help="Containers timed from attach to resolve.")
@json_option
def dns_cmd(names: int, rounds: int, seconds: float, search_steps: int, search_seconds: float, placement: str,
            weave_answers: str, attaches: int, as_json: bool) -> None:
    """weaveDNS beside dnsmasq (same names, same path, dnsperf in a container) and the time
    from attach on one host until the name resolves on another.

    weaveDNS is measured as launched ("weave": with fastdp the kernel answers at the
    container's veth the queries it can) and with its answers in the kernel turned off
    ("weave_userspace": its userspace server answers all); every weaveDNS figure says
    how many answers came from the kernel and how many from the server.

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
                       placements=dns.PLACEMENTS if placement == "both" else (placement,),
                       weave_answers=dns.WEAVE_ANSWERS if weave_answers == "both" else (weave_answers,))
    res = run_interruptible(lambda: dns.run(opts, echo=echo), "the lab of this run was torn down")
    if as_json:
        print_json(res)
        return
    meta, at = res["meta"], res["attach_to_resolve"]
    click.echo(f"weaveDNS measured: {', '.join(meta['weave_answers'])} (weave: as launched, answers in the "
               f"kernel where it can; weave_userspace: the kernel's answers off)")
    click.echo(f"load average {' '.join(str(x) for x in meta['load_before'])} before, "
               f"{' '.join(str(x) for x in meta['load_after_dnsperf'])} after dnsperf ({meta['cpus']} CPUs); "
               f"weaveDNS snapshots built while dnsperf ran: {meta['snapshots_built_during_dnsperf']}")
    for name, pl in res["placements"].items():
        mq, fx, se = pl["max_qps"], pl["fixed_load"], pl["search"]
        weaves = list(pl["floors"])
        click.echo(f"[{name}] load {' '.join(str(x) for x in pl['load_before'])} before, "
                   f"{' '.join(str(x) for x in pl['load_after'])} after")
        click.echo(f"[{name}] max qps (median of {meta['rounds']}): "
                   + ", ".join(f"{k} {mq[k]['median']} {mq[k]['runs']}" for k in (*weaves, "dnsmasq"))
                   + ", ratio to dnsmasq " + ", ".join(f"{k} {pl['ratios_to_dnsmasq'][k]}" for k in weaves))
        for k in (*weaves, "dnsmasq"):
            click.echo(f"[{name}] at {fx['qps']} qps: {k:<15} achieved {fx[k]['qps']}, p50 {fx[k]['p50_ms']} ms, "
                       f"p99 {fx[k]['p99_ms']} ms (runs {fx[k]['p99_runs_ms']}), lost {fx[k]['lost']:.0f} "
                       f"(full buffers: client {fx[k]['client_drops']}, server {fx[k]['server_drops']})")
        click.echo(f"[{name}] highest rate with p99 < 5 ms ({meta['search_steps']} steps): "
                   + ", ".join(f"{k} {se[k]['best_qps']}" for k in (*weaves, "dnsmasq")))
        for k in weaves:
            fl, fs, by = pl["floors"][k]["fixed"], pl["floors"][k]["search"], pl["floors"][k]["answered_by"]
            click.echo(f"[{name}] {k}: answered {by['kernel']} in the kernel, {by['server']} by the server "
                       f"(all its runs of this placement)")
            click.echo(f"[{name}] {k} floor (a) ({fl['rule']}): {'MET' if fl['ok'] else 'NOT MET'}: carried "
                       f"{fl['weave_qps']} qps = {fl['weave_share_of_dnsmasq_max']}x dnsmasq's max "
                       f"{fl['dnsmasq_max_qps']} with p99 {fl['weave_p99_ms']} ms (dnsmasq {fl['dnsmasq_p99_ms']} ms "
                       f"at the same rate, ratio {fl['p99_ratio_weave_to_dnsmasq']})"
                       + (f"; {fl['why_not']}" if fl["why_not"] else ""))
            click.echo(f"[{name}] {k} floor (b) ({fs['rule']}): {'MET' if fs['ok'] else 'NOT MET'}: "
                       f"{fs['weave_best_qps']} qps = {fs['weave_best_share_of_dnsmasq_max']}x dnsmasq's max "
                       f"(target {fs['target_qps']})")
    click.echo(f"attach -> resolves on another host ({at['runs']} runs): from attach start median "
               f"{at['from_attach_start_ms']['median']} ms, p99 {at['from_attach_start_ms']['p99']} ms; "
               f"from the name's addition median {at['from_name_added_ms']['median']} ms, "
               f"p99 {at['from_name_added_ms']['p99']} ms")
