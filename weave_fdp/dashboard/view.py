"""Rich renderables for ``weave-fdp top``: one full-screen frame, or one long report.

``render_frame`` fits exactly ``width`` x ``height``: panels get rows by priority
(connections, flows, drops/IPAM/DNS, then peers), lose rows before they lose
their place, and collapse entirely when even their minimum does not fit. Every
cell is one line (no wrapping) and ellipsized, so nothing overflows. On wide
screens the view splits in two columns and shows more detail.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from weave_fdp.dashboard.fmt import (
    NA,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_endpoint,
    fmt_ms,
    fmt_opt,
    fmt_rate,
)
from weave_fdp.dashboard.rates import sparkline
from weave_fdp.dashboard.snapshot import Connection, Peer, Snapshot, dns_names
from weave_fdp.dashboard.state import Dashboard

MIN_WIDTH, MIN_HEIGHT = 40, 8
WIDE_WIDTH, WIDE_HEIGHT = 150, 30

STATE_STYLE = {"established": "green", "pending": "yellow", "retrying": "yellow", "failed": "red"}
MODE_STYLE = {"fastdp": "green", "sleeve": "yellow", "tx": "green", "rx": "green", "relay": "green"}


def _table(width: int) -> Table:
    return Table(
        box=None, padding=(0, 1), pad_edge=False, expand=True, show_header=True,
        header_style="bold", width=width, show_edge=False,
    )


def _col(t: Table, name: str, *, right: bool = False, min_width: int | None = None,
         max_width: int | None = None, ratio: int | None = None, width: int | None = None) -> None:
    """One no-wrap, ellipsized column. A ``width`` (fixed, or the minimum of a ``ratio``
    column) spares rich measuring every cell: the flow table is redrawn every second."""
    t.add_column(name, justify="right" if right else "left", no_wrap=True, overflow="ellipsis",
                 min_width=min_width, max_width=max_width, ratio=ratio, width=width)


def _panel(body: RenderableType, title: str) -> Panel:
    return Panel(body, title=Text(title, overflow="ellipsis", no_wrap=True), title_align="left",
                 box=box.ROUNDED, padding=(0, 0), expand=True)


def _line(*parts: Text | str, sep: str = " │ ") -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    first = True
    for p in parts:
        if not p:
            continue
        if not first:
            out.append(sep, style="dim")
        out.append(p) if isinstance(p, Text) else out.append(str(p))
        first = False
    return out


# -- header and footer ---------------------------------------------------------

def header_lines(dash: Dashboard) -> list[Text]:
    snap = dash.snap or Snapshot()
    r = snap.router
    ident = Text(r.nickname or NA, style="bold")
    ident.append(f" {r.name or NA}" + (f" (id {r.short_id})" if r.short_id is not None else ""))
    enc = {True: Text("encrypted", style="green"), False: Text("unencrypted", style="yellow")}.get(
        r.encryption, Text("encryption n/a"))
    line1 = _line(
        Text(f"weave-fdp {snap.version or NA}", style="bold cyan"), ident, f"up {fmt_duration(r.uptime_s)}",
        enc, f"port {fmt_opt(r.port)}", "overlays " + (",".join(r.overlays) or NA),
        ("trusted " + ",".join(r.trusted_subnets)) if r.trusted_subnets else "",
    )
    c = dash.counts()
    peers = Text(f"peers {c['peers']}")
    if c["unreachable"]:
        peers.append(f" ({c['unreachable']} unreachable)", style="red")
    conns = Text(f"connections {c['connections']}")
    states = []
    for state in ("established", "pending", "retrying", "failed", "unknown"):
        n = c["by_state"].get(state)
        if n:
            s = f"{n} {state}"
            if state == "established" and c["by_mode"]:
                s += " (" + ", ".join(f"{m} {k}" for m, k in sorted(c["by_mode"].items())) + ")"
            states.append((s, STATE_STYLE.get(state, "")))
    if states:
        conns.append(": ")
        for i, (s, style) in enumerate(states):
            conns.append((", " if i else "") + s, style=style)
    line2 = _line(peers, conns, f"flows {c['flows']}")
    if dash.error:
        line2 = _line(Text(f"router: {dash.error}", style="bold red"), line2)
    return [line1, line2]


def footer_line(dash: Dashboard, now: float | None = None) -> Text:
    ui = dash.ui
    keys = Text(no_wrap=True, overflow="ellipsis")
    if ui.editing is not None:
        keys.append("filter: ", style="bold")
        keys.append(ui.editing + "█")
        keys.append("  Enter apply · Esc cancel", style="dim")
        return keys
    for k, label in (("q", "quit"), ("s", f"sort:{ui.sort}"), ("f", f"filter:{ui.filter or '-'}"),
                     ("p", "resume" if ui.paused else "pause")):
        keys.append(f" {k} ", style="reverse")
        keys.append(f" {label}  ")
    if ui.paused:
        keys.append("PAUSED  ", style="bold yellow")
    snap = dash.snap
    if snap is not None and snap.problems:
        keys.append(f"report problems: {len(snap.problems)}  ", style="yellow")
    keys.append(time.strftime("%H:%M:%S", time.localtime(now)), style="dim")
    return keys


# -- panels ------------------------------------------------------------------------

def _route(dash: Dashboard, p: Peer) -> Text:
    snap = dash.snap
    assert snap is not None
    if p.name is not None and p.name == snap.router.name:
        return Text("self", style="cyan")
    if p.reachable is False:
        return Text("unreachable", style="bold red")
    hop = dash.next_hop(p)
    if hop is None:
        return Text(NA)
    if hop == p.name:
        return Text("direct", style="green")
    return Text(f"via {snap.peer_label(hop)}")


def peers_table(dash: Dashboard, rows: int, width: int) -> Table:
    """Topology (route and links of each peer) with per-peer throughput sparklines."""
    snap = dash.snap or Snapshot()
    wide = width >= 90
    t = _table(width)
    _col(t, "peer", min_width=8, ratio=2)
    if wide:
        _col(t, "name", min_width=17)
    _col(t, "route", min_width=6)
    if wide:
        _col(t, "links", ratio=2)
    _col(t, "tx/s", right=True, width=8)
    _col(t, "rx/s", right=True, width=8)
    fixed = (8 + 6 + 8 + 8 + 10 + (17 + 12 + 4 if wide else 0))
    spark_w = max(6, min(60, width - fixed))
    _col(t, "last 60s", min_width=spark_w, max_width=spark_w)
    for p in dash.peers()[:rows]:
        r = dash.rates.peers.get(p.name or "")
        series = dash.history.series(p.name or "")
        label = Text(p.label, style="red" if p.reachable is False else "")
        row: list[Any] = [label]
        if wide:
            row.append(p.name or NA)
        row.append(_route(dash, p))
        if wide:
            links = [snap.peer_label(link.name) + ("" if link.established is not False else "?")
                     for link in p.connections]
            row.append(",".join(links) or "-")
        row += [fmt_rate(r.tx_bps if r else None), fmt_rate(r.rx_bps if r else None),
                Text(sparkline(series, spark_w), style="cyan")]
        t.add_row(*row)
    return t


def _mode(c: Connection, with_reason: bool) -> Text:
    mode = Text(c.mode or NA, style=MODE_STYLE.get(c.mode or "", ""))
    if c.mode != "fastdp" and (c.mode_reason or c.info) and with_reason:
        mode.append(f" ({c.mode_reason or c.info})", style="dim")
    return mode


def _pair(a: float | None, b: float | None) -> str:
    """Two rates in one cell for narrow screens: "2.5M/1.2M"."""
    if a is None and b is None:
        return NA
    return f"{fmt_count(a)}/{fmt_count(b)}"


def connections_table(dash: Dashboard, rows: int, width: int) -> Table:
    """Address, state, mode (with why when not fastdp), MTU, RTT, tx/rx rate."""
    wide = width >= 110
    t = _table(width)
    _col(t, "peer", min_width=5, max_width=16)
    _col(t, "address", min_width=9, max_width=24)
    if wide:
        _col(t, "dir", min_width=3)
    _col(t, "state", min_width=5, max_width=11)
    _col(t, "mode", min_width=6, ratio=1)
    _col(t, "mtu", right=True, width=4)
    _col(t, "rtt", right=True, width=6)
    if wide:
        _col(t, "tx/s", right=True, width=8)
        _col(t, "rx/s", right=True, width=8)
    else:
        _col(t, "tx/rx B/s", right=True, width=11)
    for c in dash.connections()[:rows]:
        r = dash.rates.connections.get(c.key)
        tx, rx = (r.tx_bps, r.rx_bps) if r else (None, None)
        row: list[Any] = [c.label, c.address or NA]
        if wide:
            row.append({True: "out", False: "in"}.get(c.outbound, NA))  # type: ignore[arg-type]
        state = Text(c.state or NA, style=STATE_STYLE.get(c.state or "", ""))
        mode = _mode(c, True) if c.state == "established" else Text(c.info or c.mode or NA, style="dim")
        row += [state, mode, fmt_opt(c.mtu), fmt_ms(c.rtt_ms)]
        row += [fmt_rate(tx), fmt_rate(rx)] if wide else [_pair(tx, rx)]
        t.add_row(*row)
    return t


SEP = "  "  # between fixed_grid columns


def _fit(s: str, width: int, right: bool = False) -> str:
    """``s`` in exactly ``width`` cells: padded, or cut with an ellipsis."""
    n = cell_len(s)
    if n > width:
        return set_cell_size(s, width - 1) + "…" if width > 1 else "…"[:width]
    return " " * (width - n) + s if right else s + " " * (width - n)


def fixed_grid(columns: list[tuple[str, int, bool]], rows: list[list[tuple[str, str]]]) -> Group:
    """A table of fixed-width columns drawn as one Text per line.

    rich's Table renders every cell as its own renderable; for the flow table,
    redrawn every second, one pre-cut line per row costs a fraction of that.
    ``columns``: (header, width, right-aligned); ``rows``: (text, style) per cell.
    """
    header = Text(SEP.join(_fit(name, w, right) for name, w, right in columns), style="bold",
                  no_wrap=True, overflow="crop")
    lines = [header]
    for row in rows:
        line = Text(no_wrap=True, overflow="crop")
        for k, ((cell, style), (_, w, right)) in enumerate(zip(row, columns)):
            if k:
                line.append(SEP)
            line.append(_fit(cell, w, right), style=style or None)
        lines.append(line)
    if not rows:
        lines.append(Text("none", style="dim"))
    return Group(*lines)


def flows_table(dash: Dashboard, rows: int, width: int) -> Group:
    """Top flows by the current sort: endpoints (container names when wide), proto, counters, rate, path."""
    snap = dash.snap or Snapshot()
    wide = width >= 110
    names = dns_names(snap) if wide else {}
    fixed = [("proto", 5, False)] + ([("pkts", 5, True)] if width >= 90 else []) + [
        ("bytes", 6, True), ("rate", 8, True)] + ([("pkt/s", 5, True)] if wide else []) + [("path", 6, False)]
    spare = max(0, width - sum(w for _, w, _ in fixed) - len(SEP) * (len(fixed) + 2))
    via = min(16, max(4, spare // 7))
    src_w = max(5, (spare - via) // 2)
    columns = [("source", src_w, False), ("destination", max(5, spare - via - src_w), False), *fixed,
               ("via", via, False)]
    out: list[list[tuple[str, str]]] = []
    for f, r in dash.flows(rows):
        src = fmt_endpoint(f.src_ip, f.sport, names.get(f.src_ip or ""), f.src_mac)
        dst = fmt_endpoint(f.dst_ip, f.dport, names.get(f.dst_ip or ""), f.dst_mac)
        row = [(src, ""), (dst, ""), (f.proto or NA, "")]
        if width >= 90:
            row.append((fmt_count(f.packets), ""))
        row += [(fmt_bytes(f.bytes), ""), (fmt_rate(r.bps if r else None), "")]
        if wide:
            row.append((fmt_count(r.pps) if r and r.pps is not None else NA, ""))
        row += [(f.path or NA, MODE_STYLE.get(f.path or "", "")), (snap.peer_label(f.via) if f.via else NA, "")]
        out.append(row)
    return fixed_grid(columns, out)


def _drops_text(dash: Dashboard) -> Text:
    snap = dash.snap or Snapshot()
    if not snap.has_drops:
        return Text(NA)
    if not snap.drops:
        return Text("none", style="green")
    out = Text()
    for i, (reason, n) in enumerate(sorted(snap.drops.items(), key=lambda kv: -kv[1])):
        out.append(("  " if i else "") + reason, style="red" if n else "")
        out.append(f" {fmt_count(n)}")
    return out


def section_summary(section: dict[str, Any] | None, present: bool) -> Text:
    """IPAM/DNS in one line from whatever scalar figures the router reports."""
    if not present:
        return Text(NA)
    if section is None:
        return Text("not enabled", style="dim")
    parts = []
    for k, v in section.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            parts.append(f"{k} {fmt_opt(v)}")
        elif isinstance(v, (list, dict)):
            parts.append(f"{k} {len(v)}")
    return Text("  ".join(parts) or "enabled")


def summary_grid(dash: Dashboard, width: int) -> Table:
    """Drops, IPAM and DNS, one line each (the compact form)."""
    snap = dash.snap or Snapshot()
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="bold", no_wrap=True, width=5)
    t.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    t.add_row("drops", _drops_text(dash))
    t.add_row("IPAM", section_summary(snap.ipam, snap.has_ipam))
    t.add_row("DNS", section_summary(snap.dns, snap.has_dns))
    return t


def drops_table(dash: Dashboard, rows: int, width: int) -> RenderableType:
    snap = dash.snap or Snapshot()
    if not snap.drops:
        return _drops_text(dash)
    t = _table(width)
    _col(t, "reason", ratio=1)
    _col(t, "count", right=True, min_width=6)
    _col(t, "per s", right=True, min_width=6)
    for reason, n in sorted(snap.drops.items(), key=lambda kv: -kv[1])[:rows]:
        rate = dash.rates.drops.get(reason)
        t.add_row(Text(reason, style="red" if n else ""), fmt_count(n),
                  NA if rate is None else f"{rate:.1f}")
    return t


def section_table(section: dict[str, Any] | None, present: bool, rows: int) -> RenderableType:
    """IPAM or DNS as key/value lines (wide form)."""
    if not present or section is None:
        return section_summary(section, present)
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    for k, v in list(section.items())[:rows]:
        if isinstance(v, list):
            shown = ", ".join(str(x) if not isinstance(x, dict) else " ".join(f"{a}={b}" for a, b in x.items())
                              for x in v[:20])
            t.add_row(str(k), f"{len(v)}: {shown}" if v else "0")
        elif isinstance(v, dict):
            t.add_row(str(k), "  ".join(f"{a} {fmt_opt(b) if not isinstance(b, (list, dict)) else len(b)}"
                                        for a, b in v.items()))
        else:
            t.add_row(str(k), fmt_opt(v))
    return t


# -- layout --------------------------------------------------------------------------

@dataclass
class Block:
    """A panel that can be given any number of content rows between ``min`` and ``want``."""

    title: Callable[[int], str]
    build: Callable[[int, int], RenderableType]  # (rows, inner width)
    want: int
    min: int
    overhead: int  # border (2) plus a table header (1) when it has one
    priority: int  # lower keeps its place longer
    elastic: bool = False


def allocate(blocks: list[Block], height: int) -> list[tuple[Block, int]]:
    """Content rows per block that fit ``height``; blocks that do not fit are dropped."""
    kept = list(blocks)
    while kept and sum(b.overhead + b.min for b in kept) > height:
        kept.remove(max(kept, key=lambda b: b.priority))
    rows = {id(b): b.min for b in kept}
    spare = height - sum(b.overhead + b.min for b in kept)
    for b in sorted(kept, key=lambda b: b.priority):
        if b.elastic:
            continue
        give = max(0, min(b.want - b.min, spare))
        rows[id(b)] += give
        spare -= give
    elastic = [b for b in kept if b.elastic]
    if elastic and spare > 0:
        rows[id(elastic[0])] += spare
    return [(b, rows[id(b)]) for b in kept]


def _column(blocks: list[Block], width: int, height: int) -> Layout:
    col = Layout()
    parts = []
    inner = max(1, width - 2)
    alloc = allocate(blocks, height)
    for i, (b, n) in enumerate(alloc):
        last = i == len(alloc) - 1
        part = Layout(_panel(b.build(n, inner), b.title(n)), size=None if last else b.overhead + n)
        parts.append(part)
    if not parts:
        parts.append(Layout(Text("")))
    col.split_column(*parts)
    return col


def _blocks(dash: Dashboard, wide: bool) -> dict[str, Block]:
    snap = dash.snap or Snapshot()
    n_conns = len(dash.connections())
    n_peers = len(dash.peers())
    n_flows = dash.flow_count()
    sort = dash.ui.sort
    filt = f" matching '{dash.active_filter}'" if dash.active_filter else ""

    def of(what: str, total: int) -> Callable[[int], str]:
        def title(rows: int) -> str:
            return f"{what} ({total})" if rows >= total else f"{what} ({rows} of {total})"
        return title

    def flows_title(rows: int) -> str:
        shown = min(rows, n_flows)
        return f"Flows: top {shown} of {n_flows} by {sort}{filt}"

    blocks = {
        "connections": Block(of("Connections", n_conns), lambda n, w: connections_table(dash, n, w),
                             want=max(1, n_conns), min=1, overhead=3, priority=0),
        "flows": Block(flows_title, lambda n, w: flows_table(dash, n, w),
                       want=max(1, n_flows), min=2, overhead=3, priority=1, elastic=True),
        "peers": Block(of("Peers and routes", n_peers), lambda n, w: peers_table(dash, n, w),
                       want=max(1, n_peers), min=1, overhead=3, priority=3),
    }
    if wide:
        blocks["drops"] = Block(lambda n: f"Drops ({len(snap.drops)})", lambda n, w: drops_table(dash, n, w),
                                want=max(1, len(snap.drops)), min=1, overhead=3 if snap.drops else 2, priority=2)
        ipam_n = len(snap.ipam or {}) or 1
        dns_n = len(snap.dns or {}) or 1
        blocks["ipam"] = Block(lambda n: "IPAM", lambda n, w: section_table(snap.ipam, snap.has_ipam, n),
                               want=ipam_n, min=1, overhead=2, priority=4)
        blocks["dns"] = Block(lambda n: "DNS", lambda n, w: section_table(snap.dns, snap.has_dns, n),
                              want=dns_n, min=1, overhead=2, priority=5)
    else:
        blocks["summary"] = Block(lambda n: "Drops · IPAM · DNS", lambda n, w: summary_grid(dash, w),
                                  want=3, min=3, overhead=2, priority=2)
    return blocks


def render_frame(dash: Dashboard, width: int, height: int, now: float | None = None) -> RenderableType:
    """One full-screen frame of exactly ``width`` x ``height`` cells."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        lines = header_lines(dash)[1:] + [
            Text(f"too small: {width}x{height}, the full view needs {MIN_WIDTH}x{MIN_HEIGHT}",
                 style="yellow", no_wrap=True, overflow="ellipsis"),
            footer_line(dash, now),
        ]
        return Group(*lines[: max(1, height)])
    head = header_lines(dash)
    root = Layout()
    body_h = height - len(head) - 1
    wide = width >= WIDE_WIDTH and height >= WIDE_HEIGHT
    blocks = _blocks(dash, wide)
    if wide:
        right_w = max(60, width * 2 // 5)
        left = _column([blocks["connections"], blocks["flows"]], width - right_w, body_h)
        right = _column([blocks["peers"], blocks["drops"], blocks["ipam"], blocks["dns"]], right_w, body_h)
        right.size = right_w
        body = Layout()
        body.split_row(left, right)
    else:
        order = ["connections", "flows", "peers", "summary"]
        body = _column([blocks[k] for k in order], width, body_h)
    root.split_column(Layout(Group(*head), size=len(head)), body, Layout(footer_line(dash, now), size=1))
    return root


def render_report(dash: Dashboard, width: int, flows: int = 20, now: float | None = None) -> RenderableType:
    """Every panel at its natural height (``top --once``): for scripts and bug reports."""
    blocks = _blocks(dash, wide=True)
    inner = max(1, width - 2)
    parts: list[RenderableType] = list(header_lines(dash))
    for key in ("peers", "connections", "flows", "drops", "ipam", "dns"):
        b = blocks[key]
        n = min(b.want, flows) if key == "flows" else b.want
        parts.append(_panel(b.build(n, inner), b.title(n)))
    return Group(*parts)


def offscreen_printer(width: int, height: int) -> Callable[[Dashboard], None]:
    """A function that renders a frame into memory on a truecolor terminal of that size
    (what the benchmark times: layout and rendering, no terminal I/O)."""
    con = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor")

    def show(dash: Dashboard) -> None:
        con.print(render_frame(dash, width, height))
    return show
