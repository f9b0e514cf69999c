"""Prometheus metrics of one router, built from its ``report`` on every scrape.

``start_metrics_server(addr, get_report)`` serves ``/metrics`` on ``addr``
("HOST:PORT", ":PORT" or "[V6]:PORT") from a thread, with a registry of its own
holding one custom collector. The collector calls ``get_report()`` (the same
dict the ``report`` API op returns) at scrape time, so there is no second copy
of the state and nothing to keep in sync. A report that fails or is malformed
yields ``weave_fdp_up 0`` and whatever could be read, never a failed scrape.
Only ``/metrics`` answers (GET or HEAD): any other path is 404, other methods 405.

Names follow Prometheus conventions (``_total`` counters, base units):

  weave_fdp_up, weave_fdp_router_info{name,nickname,version,encryption}, weave_fdp_uptime_seconds
  weave_fdp_peers{reachable}
  weave_fdp_connections{state,mode}  (every state always present; mode "none" when not established)
  weave_fdp_connection_{tx,rx}_bytes_total{peer,nickname,address,mode}  (control connection)
  weave_fdp_connection_mtu_bytes / _rtt_seconds{peer,nickname,mode}
  weave_fdp_flows{path}
  weave_fdp_peer_{tx,rx}_{packets,bytes}_total{peer,nickname,path}  (datapath, per peer and path)
  weave_fdp_drops_total{reason}
  weave_fdp_{ipam,dns}_enabled, and weave_fdp_{ipam,dns}_<key> for every numeric figure
  (or list, as its length) the router reports in those sections.
  weave_fdp_dns_answered_total{by}          weaveDNS answers by who gave them: "kernel" (fastdp's
                                            answers at the container veths), "server" (userspace)
  weave_fdp_dns_server_total{what}          the userspace server's counters (queries, nxdomain, ...)
  weave_fdp_dns_kernel_total{what}          the kernel's (answered, rate_limited, pass_miss, ...)

Weave Net's names as well, so its dashboards and alerts keep working (docs/INTEGRATIONS.md):

  weave_connections{state,type,encryption}  state: established|pending|retrying|failed|connecting,
                                            type: fastdp|sleeve|unknown, encryption: "yes"|""
  weave_connection_terminations_total       established connections that went down
  weave_flows                               fastdp flows
  weave_ips{state="local-used"}, weave_max_ips, weave_ipam_pending_allocates,
  weave_ipam_pending_claims, weave_ipam_unreachable_count   when IPAM runs
  weave_dns_entries{state="local"}          DNS entries of this peer's containers, when DNS runs
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from weave_fdp.errors import UsageError

log = logging.getLogger(__name__)

PREFIX = "weave_fdp"
CONN_STATES = ("established", "pending", "retrying", "failed")
WEAVE_CONN_STATES = ("established", "pending", "retrying", "failed", "connecting")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f else None


def _s(v: Any, default: str = "unknown") -> str:
    return v if isinstance(v, str) and v else (str(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                                               else default)


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _metric_name(*parts: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", "_".join(parts)).lower()


class ReportCollector(Collector):
    """Metric families from a fresh report on each ``collect()``."""

    def __init__(self, get_report: Callable[[], Any]) -> None:
        self.get_report = get_report

    def collect(self) -> Iterator[Any]:
        try:
            report = self.get_report()
        except Exception as exc:  # the scrape must still answer, with up=0
            log.warning("metrics: report failed: %s", exc)
            report = None
        up = GaugeMetricFamily(f"{PREFIX}_up", "1 when the router produced a report for this scrape")
        up.add_metric([], 1.0 if isinstance(report, dict) else 0.0)
        yield up
        if not isinstance(report, dict):
            return
        for build in (self._router, self._peers, self._connections, self._datapath, self._sections,
                      self._dns_counts, self._weave_router, self._weave_ipam_dns):
            try:
                yield from build(report)
            except Exception as exc:  # one odd section must not hide the others
                log.warning("metrics: %s failed on this report: %s", build.__name__, exc)

    # -- families -------------------------------------------------------------

    def _router(self, report: dict[str, Any]) -> Iterator[Any]:
        r = _d(report.get("router"))
        info = InfoMetricFamily(f"{PREFIX}_router", "Identity of this router")
        info.add_metric([], {"name": _s(r.get("name")), "nickname": _s(r.get("nickname")),
                             "version": _s(report.get("version")),
                             "encryption": "true" if r.get("encryption") is True else "false"})
        yield info
        uptime = _num(r.get("uptime_s"))
        if uptime is not None:
            g = GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since this router started")
            g.add_metric([], uptime)
            yield g

    def _peers(self, report: dict[str, Any]) -> Iterator[Any]:
        peers = [p for p in _l(report.get("peers")) if isinstance(p, dict)]
        g = GaugeMetricFamily(f"{PREFIX}_peers", "Peers in the topology (this one included) by reachability",
                              labels=["reachable"])
        reach = sum(1 for p in peers if p.get("reachable") is not False)
        g.add_metric(["true"], reach)
        g.add_metric(["false"], len(peers) - reach)
        yield g

    def _connections(self, report: dict[str, Any]) -> Iterator[Any]:
        conns = [c for c in _l(report.get("connections")) if isinstance(c, dict)]
        counts: dict[tuple[str, str], int] = {(s, "none"): 0 for s in CONN_STATES}
        nick = self._nicknames(report)
        tx = CounterMetricFamily(f"{PREFIX}_connection_tx_bytes", "Control bytes sent on a connection",
                                 labels=["peer", "nickname", "address", "mode"])
        rx = CounterMetricFamily(f"{PREFIX}_connection_rx_bytes", "Control bytes received on a connection",
                                 labels=["peer", "nickname", "address", "mode"])
        mtu = GaugeMetricFamily(f"{PREFIX}_connection_mtu_bytes", "MTU of a connection's current path",
                                labels=["peer", "nickname", "mode"])
        rtt = GaugeMetricFamily(f"{PREFIX}_connection_rtt_seconds", "Heartbeat round-trip time of a connection",
                                labels=["peer", "nickname", "mode"])
        for c in conns:
            state, mode = _s(c.get("state")).lower(), _s(c.get("mode"), "none").lower()
            counts[(state, mode)] = counts.get((state, mode), 0) + 1
            if c.get("state") != "established":
                continue
            peer = _s(c.get("peer"))
            labels = [peer, _s(c.get("nickname") or nick.get(peer)), _s(c.get("address")), mode]
            for fam, key in ((tx, "tx_bytes"), (rx, "rx_bytes")):
                v = _num(c.get(key))
                if v is not None:
                    fam.add_metric(labels, v)
            if (v := _num(c.get("mtu"))) is not None:
                mtu.add_metric([labels[0], labels[1], mode], v)
            if (v := _num(c.get("rtt_ms"))) is not None:
                rtt.add_metric([labels[0], labels[1], mode], v / 1000.0)
        g = GaugeMetricFamily(f"{PREFIX}_connections", "Connections by state and mode (fastdp, sleeve, none)",
                              labels=["state", "mode"])
        for (state, mode), n in sorted(counts.items()):
            g.add_metric([state, mode], n)
        yield g
        yield from (tx, rx, mtu, rtt)

    def _nicknames(self, report: dict[str, Any]) -> dict[str, str]:
        return {p["name"]: _s(p.get("nickname")) for p in _l(report.get("peers"))
                if isinstance(p, dict) and isinstance(p.get("name"), str)}

    def _datapath(self, report: dict[str, Any]) -> Iterator[Any]:
        dp = report.get("datapath")
        if not isinstance(dp, dict):
            return
        nick = self._nicknames(report)
        mode_of = {c.get("peer"): _s(c.get("mode"), "none") for c in _l(report.get("connections"))
                   if isinstance(c, dict) and c.get("state") == "established"}
        flows = [f for f in _l(dp.get("flows")) if isinstance(f, dict)]
        g = GaugeMetricFamily(f"{PREFIX}_flows", "Flows in the datapath's flow table by path", labels=["path"])
        by_path: dict[str, int] = {}
        for f in flows:
            p = _s(f.get("path"))
            by_path[p] = by_path.get(p, 0) + 1
        for p, n in sorted(by_path.items()):
            g.add_metric([p], n)
        if not by_path:
            g.add_metric(["fastdp"], 0)
        yield g
        fams = {
            key: CounterMetricFamily(f"{PREFIX}_peer_{key}", f"Datapath {key.replace('_', ' ')} to/from a peer",
                                     labels=["peer", "nickname", "path"])
            for key in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")
        }
        seen: dict[tuple[str, str], dict[str, float]] = {}
        for row in _l(dp.get("peers")):
            if not isinstance(row, dict):
                continue
            peer = _s(row.get("peer"))
            # One row per (peer, path) when the datapath splits them; else the connection's mode.
            path = _s(row.get("path") or mode_of.get(peer), "unknown")
            acc = seen.setdefault((peer, path), {})
            for key in fams:
                if (v := _num(row.get(key))) is not None:
                    acc[key] = acc.get(key, 0.0) + v
        for (peer, path), acc in sorted(seen.items()):
            for key, v in acc.items():
                fams[key].add_metric([peer, nick.get(peer, peer), path], v)
        yield from fams.values()
        drops = CounterMetricFamily(f"{PREFIX}_drops", "Packets the datapath dropped, by named reason",
                                    labels=["reason"])
        for reason, n in sorted(_d(dp.get("drops")).items()):
            if (v := _num(n)) is not None:
                drops.add_metric([str(reason)], v)
        yield drops

    def _sections(self, report: dict[str, Any]) -> Iterator[Any]:
        """IPAM and DNS: enabled flag, then every numeric figure they report (and list sizes)."""
        for section in ("ipam", "dns"):
            if section not in report:
                continue
            value = report.get(section)
            en = GaugeMetricFamily(_metric_name(PREFIX, section, "enabled"), f"1 when {section.upper()} runs")
            en.add_metric([], 1.0 if isinstance(value, dict) else 0.0)
            yield en
            names = {en.name}
            for key, v in sorted(_d(value).items()):
                if isinstance(v, list):
                    name, n = _metric_name(PREFIX, section, key), float(len(v))
                elif (n2 := _num(v)) is not None:
                    name, n = _metric_name(PREFIX, section, key), n2
                else:
                    continue
                if name in names:  # two keys that sanitize alike: keep the first
                    continue
                names.add(name)
                g = GaugeMetricFamily(name, f"{section.upper()} figure '{key}' from the router report")
                g.add_metric([], n)
                yield g


    # -- Weave Net's names -----------------------------------------------------

    def _weave_router(self, report: dict[str, Any]) -> Iterator[Any]:
        counts: dict[tuple[str, str, str], int] = {}
        types = {"unknown"}
        for c in _l(report.get("connections")):
            if not isinstance(c, dict):
                continue
            state = _s(c.get("state")).lower()
            if state == "pending" and not c.get("peer"):
                state = "connecting"   # dialing, no handshake yet: Weave's "connecting"
            typ = _s(c.get("mode"), "unknown")
            types.add(typ)
            enc = "yes" if c.get("info") == "encrypted" else ""
            counts[(state, typ, enc)] = counts.get((state, typ, enc), 0) + 1
        g = GaugeMetricFamily("weave_connections", "Number of peer-to-peer connections.",
                              labels=["state", "type", "encryption"])
        for state in WEAVE_CONN_STATES:
            for typ in sorted(types):
                for enc in ("yes", ""):
                    g.add_metric([state, typ, enc], counts.pop((state, typ, enc), 0))
        for (state, typ, enc), n in sorted(counts.items()):   # a state Weave does not know
            g.add_metric([state, typ, enc], n)
        yield g
        term = _num(_d(report.get("router")).get("terminations"))
        if term is not None:
            t = CounterMetricFamily("weave_connection_terminations", "Number of peer-to-peer connections terminated.")
            t.add_metric([], term)
            yield t
        dp = report.get("datapath")
        if isinstance(dp, dict) and "fastdp" in _l(_d(report.get("router")).get("overlays")):
            f = GaugeMetricFamily("weave_flows", "Number of FastDP flows.")
            f.add_metric([], sum(1 for x in _l(dp.get("flows")) if isinstance(x, dict)
                                 and x.get("path", "fastdp") == "fastdp"))
            yield f

    def _dns_counts(self, report: dict[str, Any]) -> Iterator[Any]:
        """Who answered weaveDNS's queries, and both answerers' counters."""
        dns = report.get("dns")
        if not isinstance(dns, dict):
            return
        server, kernel = _d(dns.get("stats")), dns.get("kernel")
        by = CounterMetricFamily(f"{PREFIX}_dns_answered", "weaveDNS answers by who gave them "
                                 "(kernel: at the container veths, with fastdp; server: userspace)", labels=["by"])
        if (v := _num(server.get("answered"))) is not None:
            by.add_metric(["server"], v)
        if isinstance(kernel, dict) and (v := _num(kernel.get("answered"))) is not None:
            by.add_metric(["kernel"], v)
        yield by
        for name, counts, help_ in (("server", server, "weaveDNS's userspace server counters"),
                                    ("kernel", _d(kernel), "weaveDNS's counters in the kernel (fastdp)")):
            fam = CounterMetricFamily(f"{PREFIX}_dns_{name}", help_, labels=["what"])
            for key, val in sorted(counts.items()):
                if key in ("names", "on", "udp_process_pid") or isinstance(val, bool):
                    continue
                if (v := _num(val)) is not None:
                    fam.add_metric([str(key)], v)
            yield fam

    def _weave_ipam_dns(self, report: dict[str, Any]) -> Iterator[Any]:
        ipam = report.get("ipam")
        if isinstance(ipam, dict):
            used = next((v for k in ("allocated", "active_ips", "local_used", "used")
                         if (v := _num(ipam.get(k))) is not None), None)
            if used is not None:
                g = GaugeMetricFamily("weave_ips", "Number of IP addresses.", labels=["state"])
                g.add_metric(["local-used"], used)
                yield g
            size = _num(ipam.get("range_num_ips"))
            if size is None and isinstance(ipam.get("range"), str):
                try:
                    size = float(ipaddress.ip_network(ipam["range"], strict=False).num_addresses)
                except ValueError:
                    size = None
            if size is not None:
                g = GaugeMetricFamily("weave_max_ips", "Size of IP address space used by allocator.")
                g.add_metric([], size)
                yield g
            entries = [e for e in _l(ipam.get("entries")) if isinstance(e, dict)]
            unreachable = (float(sum(1 for e in entries if e.get("reachable") is False)) if entries
                           else _num(ipam.get("unreachable")))
            for value, name, help_ in (
                    (ipam.get("pending_allocates"), "weave_ipam_pending_allocates", "Number of pending allocates."),
                    (ipam.get("claims_pending"), "weave_ipam_pending_claims", "Number of pending claims."),
                    (unreachable, "weave_ipam_unreachable_count", "Number of unreachable peers.")):
                n = float(len(value)) if isinstance(value, list) else _num(value)
                if n is not None:
                    g = GaugeMetricFamily(name, help_)
                    g.add_metric([], n)
                    yield g
        dns = report.get("dns")
        if isinstance(dns, dict):
            me = _d(report.get("router")).get("name")
            entries = [e for e in _l(dns.get("entries")) if isinstance(e, dict)]
            local = sum(1 for e in entries if e.get("origin", e.get("peer")) == me and not e.get("tombstone"))
            g = GaugeMetricFamily("weave_dns_entries", "Number of DNS entries.", labels=["state"])
            g.add_metric(["local"], local)
            yield g


def parse_addr(addr: str) -> tuple[str, int]:
    """"HOST:PORT", ":PORT" (all addresses) or "[V6]:PORT" -> (host, port); UsageError otherwise."""
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", addr.strip())
    if not m or not 0 < int(m.group("port")) < 65536:
        raise UsageError(f"metrics address {addr!r} is not HOST:PORT",
                         fix="use e.g. --metrics-addr 127.0.0.1:6782 or --metrics-addr :6782")
    host = m.group("v6") or m.group("host") or "0.0.0.0"
    return host, int(m.group("port"))


def make_registry(get_report: Callable[[], Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(get_report))
    return registry


METRICS_PATH = "/metrics"


def only_metrics_path(app: Callable[..., Any]) -> Callable[..., Any]:
    """WSGI wrapper: ``/metrics`` goes to ``app``; any other path is 404 and any method but
    GET/HEAD 405 (the endpoint may face the network: it answers nothing it does not serve)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found; metrics are at {METRICS_PATH}\n".encode()]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("Allow", "GET, HEAD")])
            return [b"method not allowed\n"]
        return app(environ, start_response)

    return wrapped


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 (the base's name)
        pass   # one line per scrape would fill the log


def serve_metrics(host: str, port: int, get_report: Callable[[], Any]) -> tuple[WSGIServer, threading.Thread]:
    """Serve the registry of ``get_report`` at ``/metrics`` on (host, port) from a daemon thread."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    httpd = make_server(host, port, only_metrics_path(make_wsgi_app(make_registry(get_report))), Server,
                        handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    thread.start()
    return httpd, thread


def start_metrics_server(addr: str, get_report: Callable[[], dict[str, Any]]) -> Callable[[], None]:
    """Serve ``/metrics`` on ``addr`` from a daemon thread; return a function that stops it.

    ``get_report`` runs in the server's thread: it must be safe to call from there
    (the router passes a function that takes a consistent copy of its state).
    """
    host, port = parse_addr(addr)
    try:
        server, thread = serve_metrics(host, port, get_report)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {addr}: {exc.strerror}",
                         fix="pick a free port and an address of this host for --metrics-addr") from exc
    log.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return close
