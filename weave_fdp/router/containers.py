"""Router API ops for containers: attach, detach, ps.

Targets (router/targets.py): ``netns:NAME``, ``pid:PID``, a namespace path (``/run/netns/NAME``,
``/proc/PID/ns/net``: what CNI passes), or a Docker/Podman container id or name, looked
up through the engine's API socket (weave_fdp.engine.docker_api); ``ps`` shows a
container by its 12-digit id, as Weave does. Addresses: ``[ip:]CIDR``, ``net:CIDR``,
``net:default`` (IPAM), checked by weave_fdp/addresses.py. Attachments are kept in the
state dir so ``ps`` survives a router restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from weave_fdp.addresses import AddrSpec, explicit_cidrs, parse_specs
from weave_fdp.errors import AlreadyExists, FdpError, NotFound, UsageError
from weave_fdp.router import records
from weave_fdp.router.state import atomic_write_json
from weave_fdp.router.targets import resolve, resolve_target  # noqa: F401 (resolve_target: the DNS service's)
from weave_fdp.router.statefile import keep_copy, load_json

log = logging.getLogger(__name__)

STATE_FILE = "fastdp-containers.json"
GRACE_S = 30.0     # a vanished target's IPAM addresses are kept this long (a restart gets them back)
SWEEP_S = 5.0      # how often vanished targets are looked for

#: Called after a successful attach or detach with the event ("attach"/"detach") and
#: {"target", "netns_path", "cidrs" (attach: all its addresses), "removed" (detach: the
#: addresses taken away), "all" (detach: the container left the network), "args" (the
#: request's)}; what it returns is added to the op's result (e.g. DNS adds "dns").
ContainerListener = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


def _check_ident(ident: Any) -> str | None:
    """An IPAM ident given by the caller (CNI passes the container id), or None."""
    if ident is None or ident == "":
        return None
    if not isinstance(ident, str) or len(ident) > 256 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*", ident):
        raise UsageError(f"ident {str(ident)[:60]!r} is not a container id")
    return ident


class Containers:
    """The attachments of this host and the ops that change them.

    With IPAM (``ipam``: the router's IpamService), every address of a target is held in
    IPAM under the target's name (its *ident*, e.g. ``netns:web1``): explicit ones are
    claimed, ``net:`` ones allocated, so re-attaching the same target gives the same
    addresses and nothing hands them to anyone else. A target whose veth vanished keeps
    them for GRACE_S; ``detach`` frees them at once.
    """

    def __init__(self, host: Any, state_dir: Path, run: Any = None, ipam: Any = None,
                 clock: Any = time.monotonic, listeners: list[ContainerListener] | None = None) -> None:
        self.host = host
        self.listeners = listeners if listeners is not None else []
        self.run = run or (lambda fn, *a, **kw: asyncio.to_thread(fn, *a, **kw))
        self.ipam = ipam
        self.clock = clock
        self.file = Path(state_dir) / STATE_FILE
        self.attached: dict[str, dict[str, Any]] = self._load()
        self.recorded_at: dict[str, float] = {}      # ifname -> when its record was written (this run)
        self.vanished: dict[str, float] = {}         # ident -> when its veth was seen gone
        self._sweeper: asyncio.Task[None] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        """The records; a damaged file is rebuilt from the container links the kernel shows
        (router/records.py), and the recovery is said (statefile.load_json)."""
        return load_json(self.file, records.check, what="container records", fix="",
                         rebuild=records.rebuild) or {}

    def _save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file, self.attached)
        keep_copy(self.file)

    # ------------------------------------------------------------ vanished targets

    def _forget_dead(self, live: dict[str, int], seen_at: float) -> None:
        """Drop the records of containers whose veth is gone (the container died). Without
        IPAM their addresses are free at once; with it they are kept for GRACE_S."""
        dead = [ifname for ifname in self.attached
                if ifname not in live and self.recorded_at.get(ifname, -1.0) < seen_at]
        for ifname in dead:
            rec = self.attached.pop(ifname)
            ident = str(rec.get("ident") or rec.get("target"))
            log.info("container %s is gone; its addresses %s are free%s", ident, ", ".join(rec.get("cidrs", [])),
                     f" in {GRACE_S:g} s unless it comes back" if self.ipam is not None else "")
            if self.ipam is not None:
                self.vanished.setdefault(ident, self.clock())
        if dead:
            self._save()

    async def sweep(self) -> None:
        """Notice vanished targets and free the addresses of those gone longer than GRACE_S."""
        from weave_fdp.plumbing import container_link

        seen_at = self.clock()
        live = await self.run(container_link.host_links)
        self._forget_dead(live, seen_at)
        now = self.clock()
        for ident, at in list(self.vanished.items()):
            if now - at >= GRACE_S:
                del self.vanished[ident]
                if self.ipam is not None:
                    gone = self.ipam.release(ident)
                    if gone:
                        log.info("released %d address(es) of vanished %s", len(gone), ident)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweep of vanished containers failed: %s", exc)

    def start(self) -> None:
        """Re-claim the addresses of attached targets in IPAM (idempotent; after a restart with
        lost IPAM state it rebuilds it), then sweep vanished targets periodically."""
        if self.ipam is not None:
            from weave_fdp.router.ipam.addr import ip_int

            for rec in self.attached.values():
                for cidr in rec.get("cidrs", []):
                    try:
                        self.ipam.alloc.claim(str(rec.get("ident") or rec.get("target")),
                                              ip_int(cidr.split("/")[0]), self.ipam.clock())
                    except Exception as exc:
                        log.warning("cannot re-claim %s for %s: %s", cidr, rec.get("target"), exc)
            self.ipam._flush()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    # ------------------------------------------------------------ addresses

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

    async def _claim(self, ident: str, cidr: str, timeout: float) -> bool:
        """Claim an explicit address; one held by a vanished target is taken over."""
        from weave_fdp.router.ipam.addr import ip_int

        addr = ip_int(cidr.split("/")[0])
        try:
            return bool(await self.ipam.claim(ident, addr, timeout))
        except AlreadyExists:
            a = self.ipam.alloc
            holder = a.allocs.get(addr) or a.claims.get(addr)
            if holder not in self.vanished:
                raise
            log.info("address %s of vanished %s goes to %s", cidr, holder, ident)
            self.ipam.release(holder, addr)
            return bool(await self.ipam.claim(ident, addr, timeout))

    async def resolve(self, ident: str, specs: list[AddrSpec], timeout: float) -> tuple[list[str], list[str]]:
        """The CIDRs for ``specs`` (IPAM claims and allocations made for ``ident``) and, of
        them, the ones new to it (to release if the attach fails)."""
        from weave_fdp.router.ipam.addr import ip_int

        if not specs:
            if self.ipam is None:
                raise UsageError("no address given and IPAM is off in this router",
                                 fix="give an explicit CIDR, e.g. weave-fdp attach 10.32.1.1/12 netns:web1")
            specs = [AddrSpec("net", None)]
        if self.ipam is None:
            return explicit_cidrs([str(s.cidr) if s.kind == "ip" else str(s) for s in specs]), []
        before = set(self.ipam.alloc.owned_by(ident))
        cidrs: list[str] = []
        try:
            for spec in specs:
                if spec.kind == "ip":
                    await self._claim(ident, str(spec.cidr), timeout)
                    cidrs.append(str(spec.cidr))
                else:
                    cidrs.append(await self.ipam.allocate(ident, self.ipam.subnet(spec.cidr), timeout))
        except BaseException:
            self._release_new(ident, before)
            raise
        new = [c for c in cidrs if ip_int(c.split("/")[0]) not in before]
        return cidrs, new

    def _release_new(self, ident: str, before: set[int]) -> None:
        if self.ipam is None:
            return
        for a in set(self.ipam.alloc.owned_by(ident)) - before:
            self.ipam.release(ident, a)

    # ------------------------------------------------------------ ops

    async def attach(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import arp_probe, container_link

        target = args.get("target")
        # ident: the name IPAM holds the addresses under; a container's id, however it was named
        path, ident = await asyncio.to_thread(resolve, target, args.get("docker_host"))
        label = str(args.get("label") or ident)
        ident = _check_ident(args.get("ident")) or ident   # CNI: the container id, the same across restarts
        cifname = container_link.check_ifname(args.get("ifname") or container_link.CONTAINER_IFNAME)
        specs = parse_specs(list(args.get("addrs") or []))
        timeout = float(args.get("timeout", 30.0))
        ifname = container_link.host_ifname_for(path)
        seen_at = self.clock()
        live = await self.run(container_link.host_links)
        self._forget_dead(live, seen_at)
        self.vanished.pop(ident, None)
        before = set(self.ipam.alloc.owned_by(ident)) if self.ipam is not None else set()
        cidrs, _new = await self.resolve(ident, specs, timeout)
        try:
            self._in_use(cidrs, ifname)
            existed = ifname in live
            mcast = bool(args.get("multicast_route", True))
            # the link first, without new addresses: its probes for them must travel the
            # network before any address is set (duplicate address detection)
            link = await self.run(self.host.attach, path, [], multicast_route=mcast, ifname=cifname)
            have = {str(ipaddress.IPv4Interface(c).ip) for c in link.cidrs}
            for cidr in cidrs:
                ip = str(ipaddress.IPv4Interface(cidr).ip)
                if ip in have:
                    continue
                owner = await self.run(arp_probe.address_in_use, path, ip, ifname=cifname)
                if owner is not None:
                    if not existed:
                        await self.run(self.host.detach, path)     # nothing half-attached
                    raise AlreadyExists(f"address {ip} is already in use on the network (MAC {owner} answered)",
                                        fix="pick another address, or detach it where it is")
            try:
                link = await self.run(self.host.attach, path, cidrs, multicast_route=mcast, ifname=cifname)
            except BaseException:
                if not existed:
                    await self.run(self.host.detach, path)     # nothing half-attached
                raise
        except BaseException:
            self._release_new(ident, before)
            raise
        self.attached[link.host_ifname] = {"target": target, "netns_path": path, "mac": link.mac,
                                          "cidrs": list(link.cidrs), "label": label, "ident": ident,
                                          "container_ifname": cifname}
        self.recorded_at[link.host_ifname] = self.clock()
        self._save()
        res = {"target": target, "ifname": link.host_ifname, "mac": link.mac, "cidrs": list(link.cidrs),
               "added": cidrs}
        return await self._notify("attach", {"target": target, "netns_path": path, "cidrs": list(link.cidrs),
                                             "ifname": cifname, "args": args}, res)

    async def _notify(self, event: str, info: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
        """Tell the listeners (DNS); a typed error of theirs reaches the caller, a bug is logged."""
        for fn in self.listeners:
            try:
                extra = await fn(event, info)
            except FdpError:
                raise
            except Exception:
                log.exception("container listener failed on %s of %s", event, info.get("target"))
                continue
            if extra:
                res.update(extra)
        return res

    async def _detach_cidrs(self, path: str, target: str, specs: list[AddrSpec], cifname: str) -> list[str]:
        """The container's CIDRs named by ``specs``: explicit ones must be there (NotFound
        otherwise); ``net:`` ones select every address it has in that subnet."""
        from weave_fdp.plumbing import container_link

        explicit = [str(s.cidr) for s in specs if s.kind == "ip"]
        out = await self._attached_cidrs(path, target, explicit, cifname) if explicit else []
        nets = [s for s in specs if s.kind == "net"]
        if nets:
            link = await self.run(container_link.describe, path, ifname=cifname)
            for s in nets:
                if self.ipam is not None:
                    lo, hi = self.ipam.subnet(s.cidr)
                    net = ipaddress.IPv4Network((lo, 32 - ((hi - lo).bit_length() - 1)))
                else:
                    net = ipaddress.IPv4Network(str(s.cidr or "0.0.0.0/32"))
                found = [c for c in (link.cidrs if link is not None else ())
                         if ipaddress.IPv4Interface(c).ip in net and c not in out]
                if not found:
                    raise NotFound(f"{target} has no address in {net}", fix="see weave-fdp ps")
                out.extend(found)
        return out

    async def detach(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import container_link
        from weave_fdp.router.ipam.addr import ip_int

        target = args.get("target")
        path, ident = await asyncio.to_thread(resolve, target, args.get("docker_host"))
        ifname = container_link.host_ifname_for(path)
        live = await self.run(container_link.host_links)
        if ifname not in self.attached and ifname not in live:
            raise NotFound(f"{target} is not attached to the weave network")
        cifname = self.attached.get(ifname, {}).get("container_ifname") or container_link.CONTAINER_IFNAME
        ident = str(self.attached.get(ifname, {}).get("ident") or ident)
        specs = parse_specs(list(args.get("addrs") or []))
        if specs:
            gone = await self._detach_cidrs(path, target, specs, cifname)
            left = await self.run(container_link.remove_addresses, path, gone, cifname)
            if self.ipam is not None:
                for c in gone:
                    self.ipam.release(ident, ip_int(c.split("/")[0]))
            if left:
                self.attached.setdefault(ifname, {"target": target, "netns_path": path})["cidrs"] = list(left)
                self._save()
                set_addrs = getattr(self.host, "set_port_addresses", None)
                if set_addrs is not None:      # fastdp: the port's guard forgets the addresses too
                    await self.run(set_addrs, ifname, left)
                return await self._notify("detach", {"target": target, "netns_path": path, "all": False,
                                                     "removed": gone, "args": args},
                                          {"target": target, "cidrs": list(left), "removed": False, "released": gone})
        rec = self.attached.get(ifname) or {}
        link = await self.run(container_link.describe, path, ifname=cifname)
        gone = list(link.cidrs) if link is not None else list(rec.get("cidrs", []))
        await self.run(self.host.detach, path)
        self.attached.pop(ifname, None)
        self._save()
        if self.ipam is not None:
            if args.get("grace"):
                # held GRACE_S for its ident (a container restarted by its runtime: CNI DEL then
                # ADD) and released by the sweep unless it comes back
                self.vanished[ident] = self.clock()
            else:
                self.ipam.release(ident)
        return await self._notify("detach", {"target": target, "netns_path": path, "all": True, "removed": gone,
                                             "args": args},
                                  {"target": target, "cidrs": [], "removed": True, "released": gone})

    async def _attached_cidrs(self, path: str, target: str, wanted: list[str], cifname: str) -> list[str]:
        """The container's attached CIDRs (as the kernel shows them) for the addresses in
        ``wanted``; NotFound naming the first one it does not have."""
        from weave_fdp.plumbing import container_link

        link = await self.run(container_link.describe, path, ifname=cifname)
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
        """Weave's ps: one row per attached container, named by its 12-digit id when an
        engine knows it; with ``expose`` first a ``weave:expose`` row for the host (the bridge)."""
        from weave_fdp.plumbing import container_link, links
        from weave_fdp.plumbing.weave_bridge import BRIDGE

        wanted = set(args.get("targets") or [])
        paths = set()
        for t in wanted:   # a container name given to ps: match it by its namespace
            if not t.startswith("weave:"):
                try:
                    paths.add((await asyncio.to_thread(resolve, t, args.get("docker_host")))[0])
                except FdpError:
                    pass
        live = await self.run(container_link.host_links)
        out = []
        if args.get("expose") and (not wanted or "weave:expose" in wanted):
            try:
                br = await self.run(links.get_link, BRIDGE, getattr(self.host, "netns", None))
                out.append({"container": "weave:expose", "ifname": BRIDGE, "mac": br.mac,
                            "cidrs": [c for c in br.addresses if ":" not in c]})
            except FdpError:
                pass   # no bridge (yet): nothing to show
        for ifname, rec in sorted(self.attached.items()):
            if wanted and not ({rec.get("target"), rec.get("label")} & wanted or rec.get("netns_path") in paths):
                continue
            if ifname not in live:
                continue
            out.append({"container": rec.get("label") or rec.get("target"), "target": rec.get("target"),
                        "ifname": ifname, "mac": rec.get("mac"), "cidrs": rec.get("cidrs", [])})
        return out


def register(api: Any, host: Any, state_dir: Path, run: Any = None, ipam: Any = None,
             listeners: list[ContainerListener] | None = None) -> Containers:
    """Register attach/detach/ps on the router's API server (``run``: async executor of datapath
    calls; ``ipam``: the router's IpamService, None when IPAM is off; ``listeners``: told of
    every attach and detach, see ContainerListener)."""
    c = Containers(host, state_dir, run, ipam, listeners=listeners)
    c.start()
    api.register("attach", c.attach)
    api.register("detach", c.detach)
    api.register("ps", c.ps)
    return c
