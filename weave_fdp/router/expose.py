"""`expose` and `hide`: the host on the weave network, as Weave's.

``expose [ADDR...] [-h FQDN]`` puts addresses on the ``weave`` bridge (from IPAM, under the
ident ``weave:expose``, when no ADDR is given) and masquerades the exposed subnets
(plumbing/nft_expose.py); the host then reaches containers in those subnets, and only
those (a connected route per exposed subnet). ``hide [ADDR...]`` removes exactly what
expose added: the addresses, their IPAM holds, their rules. Both are idempotent.

What was exposed is kept in ``expose.json`` in the state dir, so ``hide`` after a router
restart still knows what is ours (an address put on the bridge by hand is never touched).
The FQDN of ``-h`` goes to weaveDNS through its ``dns-add`` op (as ``dns-add IP -h FQDN``;
``dns-remove`` on hide) when DNS runs, and is kept here either way.

With fastdp the host is a port of the datapath (the weave bridge's egress runs the
containers' program): it may send from the bridge's addresses only, so expose/hide tell
fastdp (``datapath.host_addresses_changed``), and expose refuses more addresses than a
port may hold.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from weave_fdp.addresses import AddrSpec, parse_specs
from weave_fdp.errors import CapacityFull, NotFound, UsageError

log = logging.getLogger(__name__)

IDENT = "weave:expose"
STATE_FILE = "expose.json"


class Expose:
    def __init__(self, api: Any, ipam: Any, state_dir: Path, datapath: Any = None) -> None:
        self.api = api
        self.ipam = ipam
        self.datapath = datapath   # fastdp's control (host_addresses_changed), None without fastdp
        self.file = Path(state_dir) / STATE_FILE
        self.state = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"cidrs": [], "fqdn": None}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.file, exc)
            return {"cidrs": [], "fqdn": None}
        cidrs = [c for c in data.get("cidrs", []) if isinstance(c, str)] if isinstance(data, dict) else []
        fqdn = data.get("fqdn") if isinstance(data, dict) and isinstance(data.get("fqdn"), str) else None
        return {"cidrs": cidrs, "fqdn": fqdn}

    def _save(self) -> None:
        from weave_fdp.router.state import atomic_write_json

        atomic_write_json(self.file, self.state)

    async def _resolve(self, specs: list[AddrSpec], timeout: float) -> list[str]:
        from weave_fdp.router.ipam.addr import ip_int

        if not specs:
            if self.ipam is None:
                raise UsageError("expose with no address needs IPAM, which is off in this router",
                                 fix="give an address, e.g. weave-fdp expose 10.32.0.100/12")
            specs = [AddrSpec("net", None)]
        out = []
        for s in specs:
            if s.kind == "ip":
                if self.ipam is not None:
                    await self.ipam.claim(IDENT, ip_int(str(s.cidr).split("/")[0]), timeout)
                out.append(str(s.cidr))
            else:
                if self.ipam is None:
                    raise UsageError(f"{s}: allocation from a subnet needs IPAM, which is off in this router",
                                     fix="give an explicit address")
                out.append(await self.ipam.allocate(IDENT, self.ipam.subnet(s.cidr), timeout))
        return out

    async def _apply(self) -> None:
        from weave_fdp.plumbing import nft_expose

        subnets = sorted({str(ipaddress.IPv4Interface(c).network) for c in self.state["cidrs"]})
        await asyncio.to_thread(nft_expose.apply, subnets)

    async def expose(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import links

        specs = parse_specs(list(args.get("addrs") or []))
        fqdn = args.get("fqdn")
        if fqdn is not None and (not isinstance(fqdn, str) or not fqdn.strip(".") or len(fqdn) > 253):
            raise UsageError(f"-h {fqdn!r} is not a host name", fix="e.g. -h host1.weave.local")
        if not await asyncio.to_thread(links.link_exists, "weave"):
            raise NotFound("the weave bridge does not exist on this host", fix="launch the router first")
        cidrs = await self._resolve(specs, float(args.get("timeout", 30.0)))
        await self._check_room(cidrs)
        for c in cidrs:
            await asyncio.to_thread(links.add_address, "weave", c)
            if c not in self.state["cidrs"]:
                self.state["cidrs"].append(c)
        if fqdn:
            self.state["fqdn"] = fqdn.rstrip(".") + "."
        self._save()
        await self._apply()
        await self._tell_datapath()
        dns = await self._dns("dns-add", cidrs) if fqdn else None
        return {"added": cidrs, "cidrs": list(self.state["cidrs"]), "fqdn": self.state["fqdn"], "dns": dns}

    async def hide(self, args: dict[str, Any]) -> dict[str, Any]:
        from weave_fdp.plumbing import links
        from weave_fdp.router.ipam.addr import ip_int

        specs = parse_specs(list(args.get("addrs") or []))
        mine = list(self.state["cidrs"])
        if not specs:
            gone = mine
        else:
            gone = []
            for s in specs:
                if s.kind == "ip":
                    want = ipaddress.IPv4Interface(str(s.cidr)).ip
                    hit = [c for c in mine if ipaddress.IPv4Interface(c).ip == want]
                else:
                    lo, hi = self.ipam.subnet(s.cidr) if self.ipam is not None else (0, 0)
                    hit = [c for c in mine if lo <= int(ipaddress.IPv4Interface(c).ip) < hi]
                if not hit:
                    raise NotFound(f"{s} is not exposed on this host",
                                   fix=f"exposed: {', '.join(mine) or 'nothing'}")
                gone.extend(c for c in hit if c not in gone)
        for c in gone:
            await asyncio.to_thread(links.del_address, "weave", c)
            self.state["cidrs"].remove(c)
            if self.ipam is not None:
                self.ipam.release(IDENT, ip_int(c.split("/")[0]))
        dns = await self._dns("dns-remove", gone) if gone and self.state.get("fqdn") else None
        if not self.state["cidrs"]:
            self.state["fqdn"] = None
        self._save()
        await self._apply()
        await self._tell_datapath()
        return {"removed": gone, "cidrs": list(self.state["cidrs"]), "dns": dns}

    async def _check_room(self, cidrs: list[str]) -> None:
        """With fastdp, the bridge's IPv4 addresses are what the host's port may send from:
        at most MAX_PORT_IPS. Over that, nothing is added and what _resolve took is freed."""
        from weave_fdp.datapath.plan import MAX_PORT_IPS
        from weave_fdp.plumbing import links
        from weave_fdp.router.ipam.addr import ip_int

        if self.datapath is None:
            return
        have = {ipaddress.ip_interface(a).ip for a in await asyncio.to_thread(links.addresses, "weave")}
        have = {a for a in have if a.version == 4}
        total = have | {ipaddress.IPv4Interface(c).ip for c in cidrs}
        if len(total) <= MAX_PORT_IPS:
            return
        if self.ipam is not None:
            for c in cidrs:
                if c not in self.state["cidrs"]:
                    self.ipam.release(IDENT, ip_int(c.split("/")[0]))
        raise CapacityFull(f"the weave bridge would have {len(total)} IPv4 addresses; with fastdp the host "
                           f"may send from at most {MAX_PORT_IPS}",
                           fix="hide some first (weave-fdp hide ADDR), or expose a wider subnet's one address")

    async def _tell_datapath(self) -> None:
        if self.datapath is None:
            return
        try:
            await self.datapath.host_addresses_changed()
        except Exception as exc:   # the watchdog's next round syncs the port again
            log.warning("expose: fastdp did not take the bridge's addresses: %s", exc)

    async def _dns(self, op: str, cidrs: list[str]) -> str:
        """Tell weaveDNS the host's name (its ``dns-add``/``dns-remove`` ops, as `dns-add IP -h FQDN`)."""
        handler = self.api.handler(op)
        if handler is None:
            return f"kept (no DNS running here to {op.split('-')[1]} {self.state['fqdn']})"
        try:
            await handler({"addrs": [c.split("/")[0] for c in cidrs], "hostname": self.state["fqdn"]})
        except Exception as exc:   # the addresses are exposed either way; say why the name is not
            log.warning("expose: DNS %s of %s failed: %s", op, self.state["fqdn"], exc)
            return f"failed: {exc}"
        return "sent"

    def report(self) -> dict[str, Any]:
        return {"cidrs": list(self.state["cidrs"]), "fqdn": self.state["fqdn"]}


def register(api: Any, ipam: Any, state_dir: Path, datapath: Any = None) -> Expose:
    """``datapath``: fastdp's control when fastdp runs (the host is one of its ports)."""
    e = Expose(api, ipam, state_dir, datapath)
    api.register("expose", e.expose)
    api.register("hide", e.hide)
    return e
