"""The container records file (``fastdp-containers.json``): its check, and its rebuild from
what the kernel shows when it is damaged.

A record is ``{host ifname: {"target", "netns_path", "mac", "cidrs"}}``. The kernel holds
the truth: each attached container has a host-side veth ``vethwepl<7 hex>`` whose name is
derived from its namespace's identity (plumbing.container_link.host_ifname_for). So a
damaged file is rebuilt by finding, for each such veth, the namespace it belongs to among
the named namespaces (/run/netns) and the processes' (/proc/PID/ns/net), and reading the
container's MAC and addresses there. The previous good copy, when there is one, only
lends its names for the targets (a Docker container's id, say) and keeps the records of
veths whose namespace cannot be found (none of its processes left a trace we can see).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")


def valid_record(rec: Any) -> bool:
    """A record as attach writes it: an object whose cidrs are IPv4 interfaces."""
    if not isinstance(rec, dict) or not isinstance(rec.get("cidrs", []), list):
        return False
    try:
        return all(isinstance(c, str) and ipaddress.IPv4Interface(c) for c in rec.get("cidrs", []))
    except ValueError:
        return False


def check(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, rec in data.items():
        if not valid_record(rec):
            return f"the record of {str(key)[:40]} is malformed"
    return None


def _namespaces() -> list[tuple[str, str]]:
    """(path, target) of every network namespace we can see: named ones first, then one
    process per other namespace."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def add(path: str, target: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append((path, target))

    try:
        for p in sorted(NETNS_DIR.iterdir()):
            add(str(p), f"netns:{p.name}")
    except OSError:
        pass
    for pid in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int):
        add(f"/proc/{pid}/ns/net", f"pid:{pid}")
    return out


def rebuild(prev: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """(records rebuilt from the kernel, a phrase saying where they came from).

    Runs in a thread of its own: the router calls it from its event loop, where netlink
    sockets (pyroute2 runs its own loop) cannot be used."""
    with ThreadPoolExecutor(1, thread_name_prefix="records-rebuild") as pool:
        return pool.submit(_rebuild, prev or {}).result()


def _rebuild(prev: dict[str, Any]) -> tuple[dict[str, Any], str]:
    from weave_fdp.plumbing import container_link

    try:
        live = container_link.host_links()
    except Exception as exc:   # no netlink here: keep what the previous copy says
        what = "its previous copy" if prev else "nothing"
        return dict(prev), f"{what} (the kernel could not be asked: {exc})"
    if not live:
        return {}, "the kernel, which shows no attached container"
    by_ifname: dict[str, tuple[str, str]] = {}
    for path, target in _namespaces():
        try:
            name = container_link.host_ifname_for(path)
        except Exception:
            continue
        if name in live:
            by_ifname.setdefault(name, (path, target))
    records: dict[str, Any] = {}
    for ifname in sorted(live):
        hint = prev.get(ifname) if isinstance(prev.get(ifname), dict) else None
        found = by_ifname.get(ifname)
        link = None
        cifname = str((hint or {}).get("container_ifname") or container_link.CONTAINER_IFNAME)
        if found is not None:
            try:
                link = container_link.describe(found[0], ifname=cifname)
            except Exception as exc:
                log.warning("container link %s: cannot read its namespace %s: %s", ifname, found[0], exc)
        if link is not None and found is not None:
            target = hint.get("target") if hint and hint.get("target") else found[1]
            records[ifname] = {"target": target, "netns_path": found[0], "mac": link.mac,
                               "cidrs": list(link.cidrs)}
            for key in ("label", "ident", "container_ifname"):   # a CNI or engine container's id and interface
                if hint and hint.get(key):
                    records[ifname][key] = hint[key]
        elif hint is not None:
            records[ifname] = hint
    lost = sorted(set(live) - set(records))
    where = f"the container links the kernel shows ({len(records)} of {len(live)} rebuilt"
    where += f"; not found: {', '.join(lost)})" if lost else ")"
    return records, where
