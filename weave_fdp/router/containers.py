"""Router API ops for containers: attach, detach, ps.

Targets: ``netns:NAME``, ``pid:PID``, or a Docker/Podman container id or name
when such an engine is installed. Addresses: ``[ip:]CIDR``; ``net:CIDR`` and
``net:default`` need IPAM, which says so until it exists. Attachments are kept
in the state dir so ``ps`` survives a router restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from weave_fdp.errors import AlreadyExists, NotFound, UsageError

log = logging.getLogger(__name__)

STATE_FILE = "fastdp-containers.json"


def resolve_target(target: str) -> str:
    """The path of the target's network namespace."""
    if not isinstance(target, str) or not target:
        raise UsageError("no target given", fix="use netns:NAME, pid:PID or a container name")
    if target.startswith("netns:"):
        name = target[6:]
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
            raise UsageError(f"bad namespace name in {target!r}", fix="e.g. netns:web1")
        path = Path("/run/netns") / name
        if not path.exists():
            raise NotFound(f"network namespace {name} does not exist", fix="create it (ip netns add) or check the name")
        return str(path)
    if target.startswith("pid:"):
        pid = target[4:]
        if not pid.isdigit():
            raise UsageError(f"bad process id in {target!r}", fix="e.g. pid:4242")
        path = Path(f"/proc/{pid}/ns/net")
        if not path.exists():
            raise NotFound(f"process {pid} does not exist", fix="check the PID")
        return str(path)
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if exe is None:
            continue
        cp = subprocess.run([exe, "inspect", "-f", "{{.State.Pid}}", target], capture_output=True, text=True,
                            timeout=10)
        if cp.returncode == 0 and cp.stdout.strip().isdigit() and cp.stdout.strip() != "0":
            return f"/proc/{cp.stdout.strip()}/ns/net"
    raise NotFound(f"no container or namespace {target!r}",
                   fix="use netns:NAME or pid:PID (no running Docker/Podman container has that name)")


def parse_addresses(addrs: list[str]) -> list[str]:
    """CIDRs from ``[ip:]CIDR`` items; IPAM forms are refused until IPAM exists."""
    if not addrs:
        raise UsageError("no address given and IPAM is not available yet",
                         fix="give an explicit CIDR, e.g. weave-fdp attach 10.32.1.1/12 netns:web1")
    out = []
    for a in addrs:
        if a.startswith("net:"):
            raise UsageError(f"{a}: allocation from a subnet needs IPAM, which is not available yet",
                             fix="give an explicit CIDR, e.g. 10.32.1.1/12")
        cidr = a[3:] if a.startswith("ip:") else a
        if "/" not in cidr:
            raise UsageError(f"address {a!r} lacks a prefix length", fix="e.g. 10.32.1.1/12")
        try:
            iface = ipaddress.IPv4Interface(cidr)
        except ValueError as exc:
            raise UsageError(f"bad address {a!r}", fix="use [ip:]ADDRESS/PREFIXLEN, e.g. 10.32.1.1/12") from exc
        out.append(str(iface))
    return out


def _valid_record(rec: Any) -> bool:
    """A record as attach writes it: an object whose cidrs are IPv4 interfaces."""
    if not isinstance(rec, dict) or not isinstance(rec.get("cidrs", []), list):
        return False
    try:
        return all(isinstance(c, str) and ipaddress.IPv4Interface(c) for c in rec.get("cidrs", []))
    except ValueError:
        return False


class Containers:
    """The attachments of this host and the ops that change them."""

    def __init__(self, host: Any, state_dir: Path, run: Any = None) -> None:
        self.host = host
        self.run = run or (lambda fn, *a, **kw: asyncio.to_thread(fn, *a, **kw))
        self.file = Path(state_dir) / STATE_FILE
        self.attached: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable container records %s: %s", self.file, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("ignoring container records %s: not a JSON object", self.file)
            return {}
        good = {k: v for k, v in data.items() if _valid_record(v)}
        for k in sorted(set(data) - set(good)):
            log.warning("ignoring a malformed container record in %s: %s", self.file, str(k)[:80])
        return good

    def _save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.attached, indent=1, sort_keys=True))
        os.replace(tmp, self.file)

    def _forget_dead(self, live: dict[str, int]) -> None:
        """Drop the records of containers whose veth is gone (the container died): their
        addresses are free again."""
        dead = [ifname for ifname in self.attached if ifname not in live]
        for ifname in dead:
            log.info("container %s is gone; its addresses %s are free", self.attached[ifname].get("target"),
                     ", ".join(self.attached[ifname].get("cidrs", [])))
            self.attached.pop(ifname)
        if dead:
            self._save()

    def _in_use(self, cidrs: list[str], except_if: str) -> None:
        mine = {str(ipaddress.IPv4Interface(c).ip) for c in cidrs}
        for ifname, rec in self.attached.items():
            if ifname == except_if:
                continue
            theirs = {str(ipaddress.IPv4Interface(c).ip) for c in rec.get("cidrs", [])}
            clash = mine & theirs
            if clash:
                raise AlreadyExists(f"address {sorted(clash)[0]} is already used by {rec.get('target')}",
                                    fix="pick another address")

    async def attach(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import arp_probe, container_link

        target = args.get("target")
        path = resolve_target(target)
        cidrs = parse_addresses(list(args.get("addrs") or []))
        ifname = container_link.host_ifname_for(path)
        live = await self.run(container_link.host_links)
        self._forget_dead(live)
        self._in_use(cidrs, ifname)
        existed = ifname in live
        mcast = bool(args.get("multicast_route", True))
        # the link first, without new addresses: its probes for them must travel the
        # network before any address is set (duplicate address detection)
        link = await self.run(self.host.attach, path, [], multicast_route=mcast)
        have = {str(ipaddress.IPv4Interface(c).ip) for c in link.cidrs}
        for cidr in cidrs:
            ip = str(ipaddress.IPv4Interface(cidr).ip)
            if ip in have:
                continue
            owner = await self.run(arp_probe.address_in_use, path, ip)
            if owner is not None:
                if not existed:
                    await self.run(self.host.detach, path)     # nothing half-attached
                raise AlreadyExists(f"address {ip} is already in use on the network (MAC {owner} answered)",
                                    fix="pick another address, or detach it where it is")
        link = await self.run(self.host.attach, path, cidrs, multicast_route=mcast)
        self.attached[link.host_ifname] = {"target": target, "netns_path": path, "mac": link.mac,
                                          "cidrs": list(link.cidrs)}
        self._save()
        return {"target": target, "ifname": link.host_ifname, "mac": link.mac, "cidrs": list(link.cidrs)}

    async def detach(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import container_link

        target = args.get("target")
        path = resolve_target(target)
        ifname = container_link.host_ifname_for(path)
        live = await self.run(container_link.host_links)
        if ifname not in self.attached and ifname not in live:
            raise NotFound(f"{target} is not attached to the weave network")
        addrs = list(args.get("addrs") or [])
        if addrs:
            left = await self.run(container_link.remove_addresses, path,
                                  await self._attached_cidrs(path, target, parse_addresses(addrs)))
            if left:
                self.attached.setdefault(ifname, {"target": target, "netns_path": path})["cidrs"] = list(left)
                self._save()
                return {"target": target, "cidrs": list(left), "removed": False}
        await self.run(self.host.detach, path)
        self.attached.pop(ifname, None)
        self._save()
        return {"target": target, "cidrs": [], "removed": True}

    async def _attached_cidrs(self, path: str, target: str, wanted: list[str]) -> list[str]:
        """The container's attached CIDRs (as the kernel shows them) for the addresses in
        ``wanted``; NotFound naming the first one it does not have."""
        from weave_fdp.plumbing import container_link

        link = await self.run(container_link.describe, path)
        have = {str(ipaddress.IPv4Interface(c).ip): c for c in (link.cidrs if link is not None else ())}
        out = []
        for cidr in wanted:
            ip = str(ipaddress.IPv4Interface(cidr).ip)
            if ip not in have:
                raise NotFound(f"address {ip} is not attached to {target}",
                               fix=f"its addresses are {', '.join(sorted(have)) or 'none'} (see weave-fdp ps)")
            out.append(have[ip])
        return out

    async def ps(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        from weave_fdp.plumbing import container_link

        wanted = set(args.get("targets") or [])
        live = await self.run(container_link.host_links)
        out = []
        for ifname, rec in sorted(self.attached.items()):
            if wanted and rec.get("target") not in wanted:
                continue
            if ifname not in live:
                continue
            out.append({"container": rec.get("target"), "ifname": ifname, "mac": rec.get("mac"),
                        "cidrs": rec.get("cidrs", [])})
        return out


def register(api: Any, host: Any, state_dir: Path, run: Any = None) -> Containers:
    """Register attach/detach/ps on the router's API server (``run``: async executor of datapath calls)."""
    c = Containers(host, state_dir, run)
    api.register("attach", c.attach)
    api.register("detach", c.detach)
    api.register("ps", c.ps)
    return c
