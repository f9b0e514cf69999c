"""One host's fastdp: bridge, VXLAN device, programs, container ports and the plan.

The router's fastdp overlay drives this; tests drive it directly (no router) by
passing ``netns`` (a lab host). ``start`` is idempotent and is also what a
restarted router does: the devices and pinned maps are still there, the
programs are reloaded and atomically re-attached, forwarding never stopped.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any

from weave_fdp.datapath import dns_plan, hooks
from weave_fdp.datapath.fastdp import abi, ageing
from weave_fdp.datapath.fastdp.loader import (DIRECT_DEFAULT, HOST_TC_HANDLE, HOST_TC_PRIO, MAP_TYPES,
                                              PROG_FROM_CONTAINER, PROG_FROM_UNDERLAY, UNDERLAY_TC_HANDLE,
                                              UNDERLAY_TC_PRIO, VXLAN_IFNAME,
                                              FastDatapath)
from weave_fdp.datapath.fastdp.pins import recover_pins, remove_pins
from weave_fdp.datapath.plan import (DatapathPlan, LocalPort, MeshInputs, UnderlayRoute, build_plan, direct_hops,
                                     host_port, local_ports, overlay_mtu)
from weave_fdp.datapath.sleeve.sizing import container_gso_max_size
from weave_fdp.errors import NotFound
from weave_fdp.plumbing import container_link, dns_link, links, underlay_route, vxlan, weave_bridge

log = logging.getLogger(__name__)


def direct_default() -> bool:
    """The direct path's default: env WEAVE_FDP_DIRECT (0/1) if set, else the loader's."""
    env = os.environ.get("WEAVE_FDP_DIRECT", "").strip().lower()
    if env in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        return env in ("1", "true", "yes", "on")
    return DIRECT_DEFAULT


class HostDatapath:
    def __init__(self, *, netns: str | None = None, pin_dir: Path | None = None,
                 underlay_ifname: str | None = None, mtu: int | None = None,
                 direct: bool | None = None, mac_ageing_s: float = ageing.DEFAULT_AGEING_S) -> None:
        self.netns = netns
        self.pin_dir = pin_dir
        self.underlay_ifname = underlay_ifname
        self.mtu = mtu
        # direct path: VXLAN headers pushed/stripped in tc, bypassing the VXLAN device
        self.direct = direct_default() if direct is None else direct
        # learned MAC -> peer entries unseen this long are removed by age_macs()
        self.mac_ageing_s = ageing.check_ageing(mac_ageing_s)
        self.underlay_devs: set[str] = set()   # devices running fdp_from_underlay
        self.dp: FastDatapath | None = None
        self.vxlan_ifindex = 0
        self.ports: dict[str, str] = {}   # host veth -> container MAC
        self.port_ips: dict[str, tuple[str, ...]] = {}   # host veth -> the container's IPv4 addresses
        self.mesh: MeshInputs | None = None
        self.plan: DatapathPlan | None = None
        self.bridge_port: LocalPort | None = None   # the host's own port (the weave bridge) as last applied
        # gso_max_size of containers attached from now on; None: the kernel's default. The
        # fastdp overlay sets the sleeve's (one UDP GSO train per super-frame) only when the
        # sleeve will carry this host's traffic (see ``sleeve_gso_max_size``): it costs fastdp
        # itself throughput (measured 0.84x paired on one TCP stream).
        self.container_gso_max_size: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.mtu is None:
            self.mtu = overlay_mtu(weave_bridge.underlay_mtu(self.underlay_ifname, netns=self.netns))
        weave_bridge.ensure_bridge(self.mtu, netns=self.netns)
        # the host's port names the bridge's MAC: fixed, or it would follow the smallest port MAC
        dns_link.pin_bridge_mac(netns=self.netns)
        self.vxlan_ifindex = vxlan.ensure_vxlan(ifname=VXLAN_IFNAME, port=abi.VXLAN_PORT, netns=self.netns,
                                                mtu=self.mtu)
        if self.pin_dir is not None and not (self.pin_dir / "fdp_config").exists():
            prog_id = hooks.program_id(VXLAN_IFNAME, netns=self.netns)
            if prog_id:
                got = recover_pins(prog_id, self.pin_dir, list(MAP_TYPES))
                log.info("fastdp: recovered %d maps from the running program %d", len(got), prog_id)
        self.dp = FastDatapath(pin_dir=self.pin_dir).load()
        self.dp.attach_tunnel(VXLAN_IFNAME, netns=self.netns)
        # A restart: containers attached before keep their ports; recover their MACs from the pins.
        links = container_link.host_links(host_netns=self.netns)
        by_index = {idx: name for name, idx in links.items()}
        macs = self.dp.maps["fdp_macs"]
        for key in list(macs.keys()):
            e = macs.get(key)
            if e is not None and e.flags & abi.MacFlags.LOCAL and e.ifindex in by_index:
                self.ports[by_index[e.ifindex]] = abi.mac_str(key.mac)
        addrs = self.dp.maps["fdp_port_addrs"]
        for key in list(addrs.keys()):
            a = addrs.get(key)
            if a is not None and key.value in by_index:
                self.port_ips[by_index[key.value]] = tuple(abi.be32_to_ip(a.ips[i])
                                                           for i in range(min(a.count, abi.MAX_PORT_IPS)))
        for name in links:
            self.dp.attach_port(name, netns=self.netns)
        self.dp.attach_host(weave_bridge.BRIDGE, netns=self.netns)
        # weaveDNS's fast path stays off until the router's DNS service turns it on: a router
        # launched with --no-dns (or another domain) must never answer the last run's names
        self.set_dns(None, {})
        if not self.direct:
            # a previous run had it on: its receive hooks go (the config flag follows in _apply)
            for dev in hooks.devices_with_program(PROG_FROM_UNDERLAY, netns=self.netns):
                hooks.detach(dev, PROG_FROM_UNDERLAY, prio=UNDERLAY_TC_PRIO, handle=UNDERLAY_TC_HANDLE,
                             netns=self.netns)
        self._apply()

    def stop(self) -> None:
        """Let go of the programs (they stay attached and keep forwarding)."""
        if self.dp is not None:
            self.dp.close()
            self.dp = None

    def release_host_port(self) -> None:
        """Take the host off fastdp (the router stops): the bridge's program is detached and
        its port leaves the maps; the containers' ports stay and keep forwarding."""
        hooks.detach(weave_bridge.BRIDGE, PROG_FROM_CONTAINER, prio=HOST_TC_PRIO, handle=HOST_TC_HANDLE,
                     direction="egress", netns=self.netns)
        self.bridge_port = None
        if self.dp is not None:
            self._apply(host=False)

    def sleeve_gso_max_size(self) -> int:
        """The containers' ``gso_max_size`` for traffic the sleeve carries on this underlay."""
        assert self.mtu is not None
        return container_gso_max_size(self.mtu + abi.ENCAP_LEN)

    # ------------------------------------------------------------------ containers
    def attach(self, netns_path: str, cidrs: list[str], *, multicast_route: bool = True,
               ifname: str = container_link.CONTAINER_IFNAME) -> container_link.ContainerLink:
        assert self.dp is not None and self.mtu is not None
        name = container_link.host_ifname_for(netns_path)
        # the port guard's limit, checked before anything changes
        local_ports({name: "00:00:00:00:00:00"}, {name: [*self.port_ips.get(name, ()), *cidrs]})
        link = container_link.attach(netns_path, cidrs, mtu=self.mtu, host_netns=self.netns,
                                     multicast_route=multicast_route, ifname=ifname,
                                     gso_max_size=self.container_gso_max_size)
        had = (self.ports.get(link.host_ifname), self.port_ips.get(link.host_ifname))
        try:
            self.dp.attach_port(link.host_ifname, netns=self.netns)
            self.ports[link.host_ifname] = link.mac
            self.port_ips[link.host_ifname] = tuple(link.cidrs)
            self._apply()
        except BaseException:
            # roll back completely: the link (when this call made it) and its map entries
            if had[0] is None:
                self.ports.pop(link.host_ifname, None)
                self.port_ips.pop(link.host_ifname, None)
                container_link.detach(netns_path, host_netns=self.netns)
            else:
                self.ports[link.host_ifname], self.port_ips[link.host_ifname] = had[0], had[1] or ()
            try:
                self._apply()
            except Exception as exc:
                log.warning("fastdp: cannot roll back the maps after a failed attach: %s", exc)
            raise
        return link

    def set_port_addresses(self, host_ifname: str, cidrs: tuple[str, ...] | list[str]) -> None:
        """The container on ``host_ifname`` now has exactly ``cidrs`` (addresses detached)."""
        if host_ifname in self.ports:
            self.port_ips[host_ifname] = tuple(cidrs)
            self._apply()

    def restore_port_addresses(self, records: dict[str, list[str]]) -> None:
        """Containers found at start whose addresses the maps did not hold take them from
        the router's records (host veth -> CIDRs); without that their guard lets no IPv4 out."""
        changed = False
        for name, cidrs in records.items():
            if name in self.ports and not self.port_ips.get(name) and cidrs:
                self.port_ips[name] = tuple(cidrs)
                changed = True
        if changed:
            self._apply()

    def detach(self, netns_path: str) -> bool:
        name = container_link.host_ifname_for(netns_path)
        gone = container_link.detach(netns_path, host_netns=self.netns)
        self.ports.pop(name, None)
        self.port_ips.pop(name, None)
        self._apply()
        return gone

    # ------------------------------------------------------------------ plan
    def set_mesh(self, mesh: MeshInputs) -> None:
        self.mesh = mesh
        self._apply()

    def _host_side(self) -> tuple[LocalPort, int] | None:
        """The host's own port as the kernel has it now: the weave bridge's MAC and IPv4
        addresses (expose's, weaveDNS's), and its index; None when the bridge is gone."""
        try:
            info = links.get_link(weave_bridge.BRIDGE, self.netns)
        except NotFound:
            return None
        return host_port(weave_bridge.BRIDGE, str(info.mac), info.addresses), info.index

    def sync_host_port(self) -> bool:
        """Re-read the bridge's MAC and addresses (after expose/hide, weaveDNS pinning the MAC,
        or a change by hand) and apply them when they changed; True when they had."""
        if self.dp is None or self.bridge_port is None:
            return False
        side = self._host_side()
        if side is not None and side[0] == self.bridge_port:
            return False
        self._apply()
        return True

    def _apply(self, host: bool = True) -> None:
        if self.dp is None:
            return
        ifindex = container_link.host_links(host_netns=self.netns)
        side = self._host_side() if host else None
        if side is not None:
            ifindex[weave_bridge.BRIDGE] = side[1]
        self.bridge_port = side[0] if side is not None else None
        if self.mesh is None:
            # no mesh yet: the containers still get their ports (and their guard)
            self.dp.apply_ports(local_ports(self.ports, self.port_ips), ifindex, 0, host=self.bridge_port)
            return
        self.plan = build_plan(local=self.mesh.local, short_ids=self.mesh.short_ids, unicast=self.mesh.unicast,
                               broadcast=self.mesh.broadcast, hop_ips=self.mesh.hop_ips, modes=self.mesh.modes,
                               ports=self.ports, mtu=self.mtu or 1450, sealed=self.mesh.sealed,
                               xfrm=self.mesh.xfrm, receive=self.mesh.receive, port_ips=self.port_ips,
                               host=self.bridge_port)
        routes = self._underlay_routes(self.plan) if self.direct else {}
        self.dp.apply(self.plan, vxlan_ifindex=self.vxlan_ifindex, ifindex=ifindex, direct=self.direct,
                      underlay=routes)

    def _underlay_routes(self, plan: DatapathPlan) -> dict[int, UnderlayRoute]:
        """Route of the direct path to every fastdp next hop; its receive hook on their devices.

        Next hops without a usable route get no entry: their frames take the VXLAN device.
        """
        assert self.dp is not None
        routes: dict[int, UnderlayRoute] = {}
        # ESP peers never take the direct path: bpf_redirect_neigh would bypass xfrm
        esp_sids = {self.mesh.short_ids[p] for p in self.mesh.xfrm if p in self.mesh.short_ids} if self.mesh else set()
        for sid, ip in direct_hops(plan).items():
            if sid in esp_sids:
                continue
            r = underlay_route.route_to(ip, netns=self.netns)
            if r is None:
                log.info("fastdp direct path: no usable route to %s, peer %d uses the VXLAN device", ip, sid)
                continue
            routes[sid] = UnderlayRoute(r.ifindex, r.ifname, r.src, r.gateway)
        devs = {r.ifname for r in routes.values()} | ({self.underlay_ifname} if self.underlay_ifname else set())
        for dev in sorted(devs - self.underlay_devs):
            self.dp.attach_underlay(dev, netns=self.netns)
            self.underlay_devs.add(dev)
        return routes

    # ------------------------------------------------------------------ weaveDNS fast path
    def set_dns(self, settings: dns_plan.DnsSettings | None,
                entries: dict[bytes, dns_plan.DnsEntry]) -> dns_plan.DnsDiff | None:
        """The names the kernel answers (``dns_plan.plan_entries``) and how (``settings``;
        None: off, every query goes to the userspace server). Names removed are deleted
        before anything is written."""
        if self.dp is None:
            return None
        if settings is None:
            self.dp.configure_dns(None)
            return self.dp.apply_dns({})
        diff = self.dp.apply_dns(entries)
        self.dp.configure_dns(settings)
        return diff

    def dns_stats(self) -> dict[str, int] | None:
        """The fast path's counters (None before start)."""
        return self.dp.dns_stats() if self.dp is not None else None

    # ------------------------------------------------------------------ MAC ageing
    def age_macs(self, now: float | None = None) -> list[str]:
        """Remove learned MAC entries not seen for ``mac_ageing_s``; the MACs removed.

        The router calls this periodically (every ``mac_sweep_interval()`` seconds,
        off its event loop: it walks the map with one syscall or two per entry).
        ``now``: ``time.monotonic()`` seconds (default: now). Local entries never age.
        """
        if self.dp is None:
            return []
        removed = self.dp.age_macs(self.mac_ageing_s, None if now is None else int(now * 1e9))
        if removed:
            log.debug("fastdp: %d learned MACs aged out: %s", len(removed), ", ".join(removed[:8]))
        return removed

    def mac_sweep_interval(self) -> float:
        """How often to call ``age_macs``, seconds: a tenth of the ageing time, at most 30 s,
        so an entry outlives its ageing time by at most ~10% (as a bridge's GC)."""
        return max(1.0, min(30.0, self.mac_ageing_s / 10))

    # ------------------------------------------------------------------ counters
    def report(self) -> dict[str, Any]:
        if self.dp is None:
            return {"flows": [], "peers": [], "drops": {}}
        names = dict(self.plan.names) if self.plan else {}
        return {"flows": self.dp.flows(names), "peers": self.dp.peer_stats(names or None),
                "drops": self.dp.drops(), "entries": self.map_entries()}

    def map_entries(self) -> dict[str, int]:
        """Entries per map that hold something (the reset/detach tests check these):
        ``local_macs`` and ``port_addrs`` count the containers' ports, ``host_port`` the
        host's own (1 while the bridge's MAC is in the maps)."""
        if self.dp is None:
            return {}
        host_mac = self.bridge_port.mac if self.bridge_port is not None else None
        macs = [abi.mac_str(k.mac) for k in self.dp.maps["fdp_macs"].keys()]
        local = sum(1 for m in macs if m != host_mac)
        host = len(macs) - local
        learned = len(list(self.dp.maps["fdp_learned"].keys()))
        out = {"fdp_macs": local + host + learned, "local_macs": local, "learned_macs": learned,
               "port_addrs": len(list(self.dp.maps["fdp_port_addrs"].keys())) - host, "host_port": host}
        ports = self.dp.maps["fdp_ports"].get(ctypes.c_uint32(0))
        out["fdp_ports"] = ports.count if ports else 0
        return out


def reset_host(*, netns: str | None = None, pin_dir: Path | None = None) -> dict[str, list[str]]:
    """Remove every fastdp program, map pin, device and container link of a host."""
    removed: dict[str, list[str]] = {"links": [], "pins": []}
    for name in container_link.host_links(host_netns=netns):
        hooks.detach_all(name, netns=netns)
        from weave_fdp.plumbing.links import delete_link
        if delete_link(name, netns=netns):
            removed["links"].append(name)
    hooks.detach_all(VXLAN_IFNAME, netns=netns)
    hooks.detach(weave_bridge.BRIDGE, PROG_FROM_CONTAINER, prio=HOST_TC_PRIO, handle=HOST_TC_HANDLE,
                 direction="egress", netns=netns)
    for dev in hooks.devices_with_program(PROG_FROM_UNDERLAY, netns=netns):
        hooks.detach(dev, PROG_FROM_UNDERLAY, prio=UNDERLAY_TC_PRIO, handle=UNDERLAY_TC_HANDLE, netns=netns)
    if vxlan.delete_vxlan(ifname=VXLAN_IFNAME, netns=netns):
        removed["links"].append(VXLAN_IFNAME)
    if weave_bridge.delete_bridge(netns=netns):
        removed["links"].append(weave_bridge.BRIDGE)
    if pin_dir is not None:
        removed["pins"] = remove_pins(pin_dir)
    return removed
