"""What `status` prints: pure formatting of the router's report (no click, no I/O).

The status commands (``cli/commands/status.py``) fetch the report and print
these; other commands (``dns``) and the tests use them too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def summary(rep: dict[str, Any]) -> dict[str, Any]:
    """`status` (and `status --json`): the router at a glance."""
    r = rep["router"]
    conns = rep["connections"]
    return {"version": rep["version"], "name": r["name"], "nickname": r["nickname"],
            "short_id": r["short_id"], "encryption": r["encryption"], "port": r["port"],
            "overlays": r["overlays"], "peers": len(rep["peers"]),
            "peer_connections": sum(len(p["connections"]) for p in rep["peers"]),
            "connections": len(conns), "established": sum(1 for c in conns if c["state"] == "established"),
            "failed": sum(1 for c in conns if c["state"] in ("failed", "retrying")),
            "targets": len(rep["targets"]), "uptime_s": r["uptime_s"],
            "ipam": {k: v for k, v in (rep.get("ipam") or {}).items()
                     if k in ("status", "range", "default_subnet")} or None,
            "dns": dns_summary(rep.get("dns"))}


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """`status` as text: the router block, then the IPAM and DNS blocks when they run."""
    s = summary(rep)
    rows = [("Version", s["version"]), ("Name", peer_label(s["name"], s["nickname"])),
            ("Short ID", s["short_id"]), ("Encryption", "enabled" if s["encryption"] else "disabled"),
            ("Port", s["port"]), ("Overlays", " ".join(s["overlays"]) or "none"),
            ("Peers", f"{s['peers']} (with {s['peer_connections']} established connections)"),
            ("Connections", f"{s['connections']} ({s['established']} established, {s['failed']} failed)"),
            ("Targets", s["targets"]), ("Uptime", f"{s['uptime_s']:.0f} s")]
    blocks = [rows]
    if rep.get("ipam"):
        blocks.append(ipam_rows(rep["ipam"]))
    if s["dns"]:
        blocks.append(dns_rows(s["dns"]))
    out: list[str] = []
    for block in blocks:
        if out:
            out.append("")
        out.extend(f"{k:>15}: {v}" for k, v in block)
    return out


def peer_lines(rep: dict[str, Any]) -> list[str]:
    """`status peers`: every peer, its next hop, and the connections it announces."""
    out = []
    nick = {p["name"]: p["nickname"] for p in rep["peers"]}
    for p in rep["peers"]:
        hop = "" if p["name"] == rep["router"]["name"] else f"  via {p['next_hop'] or 'unreachable'}"
        out.append(f"{peer_label(p['name'], p['nickname'])}  sid={p['short_id']}{hop}")
        for c in p["connections"]:
            arrow = "->" if c["outbound"] else "<-"
            st = "established" if c["established"] else "pending"
            out.append(f"   {arrow} {c['address']:<22} {peer_label(c['name'], nick.get(c['name']))}  {st}")
    return out


def peer_label(name: str | None, nick: str | None) -> str:
    """A peer as Weave prints it: ``name(nickname)``."""
    return f"{name}({nick})" if nick else (name or "?")


def clock_time(ts: float | None) -> str:
    """A wall-clock time as HH:MM:SS ("-" for none)."""
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def connection_line(c: dict[str, Any]) -> str:
    """One line of `status connections` from a report connection."""
    arrow = "->" if c["outbound"] else "<-"
    parts = [f"{arrow} {c['address']:<22}", f"{c['state']:<11}"]
    if c["state"] == "pending" and not c.get("peer"):
        parts.append(c.get("info") or "connecting")   # dialing: no peer has answered yet
    elif c["state"] == "established" or c["state"] == "pending":
        mode = c.get("mode") or "-"
        parts.append(f"{c['encryption']} {mode}" if c.get("encryption") and c.get("mode") else mode)
        parts.append(peer_label(c.get("peer"), c.get("nickname")))
        if c.get("mtu"):
            parts.append(f"mtu={c['mtu']}")
        if c.get("mode") != "fastdp" and c.get("mode_reason"):
            parts.append(f"({c['mode_reason']})")   # why not fastdp (or why nothing carries it)
    else:
        parts.append(c.get("info") or "")
        if c.get("retry_at"):
            parts[-1] += f", retry: {clock_time(c['retry_at'])}"
    return " ".join(p for p in parts if p)


def dns_summary(dns: Any) -> dict[str, Any] | None:
    """What `status` says of weaveDNS (None when it is off)."""
    if not isinstance(dns, dict):
        return None
    return {"domain": dns.get("domain"), "upstream": dns.get("upstream") or [], "ttl": dns.get("ttl"),
            "entries": len(dns.get("entries") or []), "address": dns.get("address"), "error": dns.get("error"),
            "answered": answered_counts(dns)}


def answered_counts(dns: Any) -> dict[str, int | None] | None:
    """Who answered weaveDNS's queries: {"kernel": n or None (no fastdp), "server": n}."""
    if not isinstance(dns, dict):
        return None
    stats, kernel = dns.get("stats"), dns.get("kernel")
    server = stats.get("answered") if isinstance(stats, dict) else None
    k = kernel.get("answered") if isinstance(kernel, dict) else None
    if not isinstance(server, int):
        return None
    return {"kernel": k if isinstance(k, int) else None, "server": server}


def answered_line(dns: Any) -> str | None:
    """``answered: N in the kernel, M by the server`` (by the server alone without fastdp)."""
    c = answered_counts(dns)
    if c is None:
        return None
    if c["kernel"] is None:
        return f"answered: {c['server']} by the server"
    return f"answered: {c['kernel']} in the kernel, {c['server']} by the server"


def dns_rows(dns: dict[str, Any]) -> list[tuple[str, Any]]:
    """The DNS block of `status`, as Weave prints it (plus where it listens)."""
    rows = [("Service", "dns"), ("Domain", dns["domain"]), ("Upstream", ", ".join(dns["upstream"]) or "none"),
            ("TTL", dns["ttl"]), ("Entries", dns["entries"]), ("Address", dns["address"])]
    answered = dns.get("answered")
    if answered and answered.get("kernel") is not None:
        rows.append(("Answered in the kernel", answered["kernel"]))
    if answered:
        rows.append(("Answered by the server", answered["server"]))
    if dns.get("error"):
        rows.append(("Error", dns["error"]))
    return rows


def ipam_rows(ipam: dict[str, Any]) -> list[tuple[str, Any]]:
    """The IPAM block of `status`, as Weave prints it."""
    return [("Service", "ipam"), ("Status", ipam["status"]), ("Range", ipam["range"]),
            ("DefaultSubnet", ipam["default_subnet"])]


def ipam_lines(ipam: dict[str, Any]) -> list[str]:
    """`status ipam`: per peer, addresses owned, share of the range, reachability (Weave's shape)."""
    out = []
    for e in ipam["entries"]:
        label = peer_label(e["name"], e.get("nickname"))
        line = f"{label:<34} {e['size']:>8} IPs ({e['share']:04.1f}% of total)"
        if e.get("active") is not None:
            line += f" ({e['active']} active, {e['free']} available)"
        else:
            line += f" ({e['free']} available)"
        if not e["reachable"]:
            line += " - unreachable!"
        out.append(line)
    for c in ipam.get("conflicts", []):
        out.append(f"conflict with {c['label']}: {c['reason']}")
    if not ipam["entries"]:
        out.append(f"{ipam['status']}: no ring yet")
    return out
