"""Load and attach the fastdp programs; apply a DatapathPlan to the maps.

bcc compiles in a short-lived child (``fastdp.compile``) that pins what it loaded;
this process opens the pins and does the rest with raw bpf() calls, so the router
never maps bcc/LLVM. One load per host: the programs share the maps, which are
pinned in the host's bpffs directory so that a restarted router reuses them while
the attached programs keep forwarding.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weave_fdp import paths
from weave_fdp.datapath import bpf_syscall, dns_plan, hooks
from weave_fdp.datapath.fastdp import abi, ageing, pins
from weave_fdp.datapath.fastdp.compile import Loaded, compile_and_open
from weave_fdp.datapath.fastdp.maps import BpfMap
from weave_fdp.datapath.plan import DatapathPlan, LocalPort, UnderlayRoute, diff_macs
from weave_fdp.errors import DatapathError
from weave_fdp.plumbing import weave_bridge

log = logging.getLogger(__name__)

PROG_FROM_CONTAINER = "fdp_from_container"
PROG_FROM_TUNNEL = "fdp_from_tunnel"
PROG_FROM_UNDERLAY = "fdp_from_underlay"
PROGRAMS = (PROG_FROM_CONTAINER, PROG_FROM_TUNNEL, PROG_FROM_UNDERLAY)
hooks.name_programs(*PROGRAMS)   # tcx keeps 15 characters of a name: `hooks.programs` says them whole
# the collect_md VXLAN device fdp_from_tunnel runs on, named after its port
VXLAN_IFNAME = f"vxlan-{abi.VXLAN_PORT}"
# The direct path (bpf/lib/direct.h) unless the host says otherwise (HostDatapath(direct=...),
# env WEAVE_FDP_DIRECT=0|1); decided by `weave-fdp bench datapath`, see docs/PERFORMANCE.md.
DIRECT_DEFAULT = True
# tc filter of the underlay hook: its own priority and handle, so the device's other
# filters (other software's) stay; deleted alone by reset
UNDERLAY_TC_PRIO = 0xFD0
UNDERLAY_TC_HANDLE = 0xFD0
# tc filter of the host's own port (fdp_from_container at the weave bridge's egress)
HOST_TC_PRIO, HOST_TC_HANDLE = weave_bridge.HOST_TC_PRIO, weave_bridge.HOST_TC_HANDLE
_MODE = {"fastdp": abi.Mode.FASTDP, "sleeve": abi.Mode.SLEEVE, "none": abi.Mode.NONE}
_PATH_NAMES = {p.value: p.name.lower() for p in abi.Path}
# frames the programs passed to the bridge were carried by the sleeve or stayed on this host
_FLOW_PATH = {"sleeve": "sleeve", "local": "local"}

# map name -> (key type, value type, per CPU)
MAP_TYPES: dict[str, tuple[Any, Any, bool]] = {name: (spec.key, spec.value, spec.percpu)
                                               for name, spec in abi.MAPS.items()}


def _dns_key(key: bytes) -> abi.DnsKey:
    k = abi.DnsKey()
    ctypes.memmove(k.name, dns_plan.key_bytes(key), abi.DNS_NAME_MAX)
    return k


class FastDatapath:
    """The programs and maps of one host.

    ``pin_dir`` None keeps the maps private (tests); ``test_mode`` builds the
    BPF_PROG_TEST_RUN variant (see fdp_abi.h).
    """

    def __init__(self, *, pin_dir: Path | None = None, test_mode: bool = False,
                 defines: Mapping[str, str | int] | None = None) -> None:
        self.pin_dir = pin_dir
        self.test_mode = test_mode
        self.defines = dict(defines or {})
        self.maps: dict[str, BpfMap[Any, Any]] = {}
        self._fds: dict[str, int] = {}
        self._loaded: Loaded | None = None
        self._tags: dict[str, str] = {}
        # "DEV DIRECTION" -> where this process attached a program there: "tcx" or "clsact"
        self.hooks: dict[str, str] = {}

    # ------------------------------------------------------------------ load
    def cflags(self) -> list[str]:
        flags = [f"-D{k}={v}" for k, v in sorted(self.defines.items())]
        if self.pin_dir is not None:
            flags.append(f'-DFDP_PIN_DIR="{self.pin_dir}"')
        if self.test_mode:
            flags.append("-DFDP_TEST_MODE")
        return flags

    def load(self) -> "FastDatapath":
        """Compile and load every program of PROGRAMS in a child process, open them here
        (raises DatapathError naming the program and why; ``.log``: the verifier's tail)."""
        started = time.monotonic()
        if self.pin_dir is not None:
            self.pin_dir.mkdir(parents=True, exist_ok=True)
            pins.drop_stale_pins(self.pin_dir, self.map_layouts())
            stage_root = self.pin_dir.parent
        else:
            stage_root = pins.bpffs_root() / paths.BPFFS_ROOT.relative_to("/")
        loaded = compile_and_open(list(PROGRAMS), self.cflags(), stage_root)
        try:
            self._open(loaded)
        except BaseException:
            loaded.close()
            raise
        self._loaded, self._fds = loaded, dict(loaded.prog_fds)
        log.info("fastdp programs loaded in %.2f s (compiler child %.2f s; pins: %s)",
                 time.monotonic() - started, loaded.child_seconds, self.pin_dir)
        return self

    def map_layouts(self) -> dict[str, tuple[int, int, int | None]]:
        """name -> (key size, value size, max entries) the programs will create; entries
        not checked when ``defines`` may resize maps (tests)."""
        return {name: (ctypes.sizeof(spec.key), ctypes.sizeof(spec.value),
                       None if self.defines else spec.max_entries)
                for name, spec in abi.MAPS.items()}

    def _open(self, loaded: Loaded) -> None:
        """Wrap the maps of MAP_TYPES, checking their sizes against the ABI mirror."""
        for name, (kt, vt, percpu) in MAP_TYPES.items():
            fd = loaded.map_fds.get(name)
            if fd is None:
                raise DatapathError(f"the fastdp programs have no map {name}",
                                    fix="bpf/lib/maps.h and loader.MAP_TYPES disagree: rebuild both")
            info = bpf_syscall.map_info(fd)
            if (info.key_size, info.value_size) != (ctypes.sizeof(kt), ctypes.sizeof(vt)):
                raise DatapathError(
                    f"BPF map {name} has key/value sizes {info.key_size}/{info.value_size}, the ABI mirror "
                    f"says {ctypes.sizeof(kt)}/{ctypes.sizeof(vt)}",
                    fix="fdp_abi.h and abi.py disagree (or an old pinned map: `weave-fdp reset`)")
            self.maps[name] = BpfMap(fd, name, kt, vt, percpu=percpu)

    def prog_fd(self, name: str) -> int:
        return self._fds[name]

    def table_fd(self, name: str) -> int:
        """fd of any map of the programs (also those outside MAP_TYPES, e.g. test maps)."""
        assert self._loaded is not None, "load() first"
        return self._loaded.map_fds[name]

    def close(self) -> None:
        """Drop our references (attached programs and pinned maps stay in the kernel)."""
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None
        self.maps.clear()
        self._fds.clear()
        self._tags.clear()

    # ------------------------------------------------------------------ attach
    def tag(self, name: str) -> str:
        """The kernel's tag of program ``name`` (hash of its code), as ``tc`` prints it."""
        if name not in self._tags:
            try:
                self._tags[name] = bpf_syscall.prog_info(self._fds[name]).tag
            except OSError:
                return ""
        return self._tags[name]

    def attach_port(self, ifname: str, netns: Any = None) -> None:
        self._attach(ifname, PROG_FROM_CONTAINER, netns=netns)

    def attach_host(self, bridge: str, netns: Any = None) -> None:
        """The host's own port: the container-side program at the bridge's tc egress, where
        the frames the host sends on the weave network pass (skb->ifindex is the bridge's)."""
        self._attach(bridge, PROG_FROM_CONTAINER, direction="egress", netns=netns, prio=HOST_TC_PRIO,
                     handle=HOST_TC_HANDLE)

    def attach_tunnel(self, ifname: str, netns: Any = None) -> None:
        self._attach(ifname, PROG_FROM_TUNNEL, netns=netns)

    def attach_underlay(self, ifname: str, netns: Any = None) -> None:
        """The direct path's receive hook on an underlay device (as a filter: a priority of its own)."""
        self._attach(ifname, PROG_FROM_UNDERLAY, netns=netns, prio=UNDERLAY_TC_PRIO, handle=UNDERLAY_TC_HANDLE)

    def _attach(self, ifname: str, prog: str, *, direction: str = "ingress", netns: Any = None,
                **filter_at: int) -> None:
        done = hooks.attach(ifname, self._fds[prog], prog, direction=direction, netns=netns, tag=self.tag(prog),
                            **filter_at)
        self.hooks[f"{ifname} {direction}"] = done.kind

    # ------------------------------------------------------------------ plan
    def configure(self, local_short_id: int, vxlan_ifindex: int, mtu: int, *, direct: bool = False,
                  host_ifindex: int = 0) -> None:
        """``direct``: the direct path (VXLAN headers pushed/stripped in tc, bpf/lib/direct.h);
        ``host_ifindex``: the weave bridge when the host has its own port (0: none)."""
        flags = (abi.CONFIG_READY | (abi.CONFIG_DIRECT if direct else 0)) if vxlan_ifindex else 0
        cfg = abi.Config(abi_version=abi.ABI_VERSION, local_peer=local_short_id, flags=flags,
                         vxlan_ifindex=vxlan_ifindex, mtu=mtu, host_ifindex=host_ifindex)
        self.maps["fdp_config"].set(ctypes.c_uint32(0), cfg)

    def apply(self, plan: DatapathPlan, *, vxlan_ifindex: int, ifindex: Mapping[str, int],
              direct: bool = False, underlay: Mapping[int, UnderlayRoute] | None = None) -> None:
        """Make the maps match ``plan``. ``ifindex``: host veth name -> index; ``underlay``:
        next-hop short ID -> route of the direct path (entries not listed are cleared).
        The host's own port (``plan.host``) needs its device in ``ifindex`` too."""
        host_idx = ifindex.get(plan.host.ifname, 0) if plan.host is not None else 0
        self.configure(plan.local_short_id, vxlan_ifindex, plan.mtu, direct=direct, host_ifindex=host_idx)
        self._apply_underlay(underlay or {})
        peers = self.maps["fdp_peers"]
        for sid in range(abi.MAX_PEERS):
            route = plan.peers.get(sid)
            if route is None:
                cur = peers.get(ctypes.c_uint32(sid))
                if cur is not None and cur.flags:
                    peers.set(ctypes.c_uint32(sid), abi.Peer())
                continue
            peers.set(ctypes.c_uint32(sid), abi.Peer(
                nexthop_ip=abi.ip_to_be32(route.nexthop_ip), nexthop_peer=route.nexthop_short_id,
                mode=_MODE[route.mode], flags=abi.PeerFlags.KNOWN))
        self._apply_neighbours(plan)
        bcast = self.maps["fdp_bcast"]
        for sid in range(abi.MAX_PEERS):
            hops = plan.bcast.get(sid, ())
            if not hops:
                cur = bcast.get(ctypes.c_uint32(sid))
                if cur is not None and cur.count:
                    bcast.set(ctypes.c_uint32(sid), abi.Bcast())
                continue
            val = abi.Bcast(count=len(hops))
            for i, hop in enumerate(hops):
                val.hops[i] = abi.Hop(ip=abi.ip_to_be32(hop.ip), peer=hop.short_id, mode=_MODE[hop.mode])
            bcast.set(ctypes.c_uint32(sid), val)
        self.apply_ports(plan.ports, ifindex, plan.local_short_id, host=plan.host)
        learned = self.maps["fdp_learned"]
        for key in list(learned.keys()):
            e = learned.get(key)
            if e is not None and (e.peer not in plan.peers or e.peer == plan.local_short_id):
                learned.delete(key)   # a peer that left takes its MACs with it

    def apply_ports(self, ports: tuple[LocalPort, ...], ifindex: Mapping[str, int], local_short_id: int,
                    host: LocalPort | None = None) -> None:
        """The local containers: flood targets (fdp_ports), local MACs (fdp_macs) and what
        each may send from (fdp_port_addrs); ``host``, the host's own port (the weave
        bridge), gets its MAC and addresses but is no flood target (fdp_flood_local gives
        it its copy through fdp_config.host_ifindex). Needs no mesh: a container attached
        before the mesh is up can talk to its neighbours on this host. Stale entries go
        first, so a full table never blocks a change that frees room."""
        pa = self.maps["fdp_port_addrs"]
        want: dict[int, abi.PortAddrs] = {}
        for p in (*ports, *((host,) if host is not None else ())):
            if p.ifname not in ifindex:
                continue
            val = abi.PortAddrs(count=len(p.ips))
            ctypes.memmove(val.mac, abi.mac_bytes(p.mac), 6)
            for i, ip in enumerate(p.ips):
                val.ips[i] = abi.ip_to_be32(ip)
            want[ifindex[p.ifname]] = val
        for key in list(pa.keys()):
            if key.value not in want:
                pa.delete(key)
        macs = self.maps["fdp_macs"]
        current = {abi.mac_str(k.mac): (local_short_id, True) for k in list(macs.keys())}
        diff = diff_macs(current, DatapathPlan(local_short_id, 0, ports=ports, host=host))
        for mac in diff.delete:
            macs.delete(abi.mac_key(mac))
        for idx, val in want.items():
            cur = pa.get(ctypes.c_uint32(idx))
            if cur is None or bytes(cur) != bytes(val):
                pa.set(ctypes.c_uint32(idx), val)
        for mac, ifname in diff.upsert.items():
            if ifname in ifindex:
                macs.set(abi.mac_key(mac), abi.MacEntry(peer=local_short_id, flags=abi.MacFlags.LOCAL,
                                                        ifindex=ifindex[ifname]))
        self.unlearn_local_macs()
        val = abi.Ports()
        indexes = [ifindex[p.ifname] for p in ports if p.ifname in ifindex]
        val.count = len(indexes)
        for i, idx in enumerate(indexes):
            val.ifindex[i] = idx
        self.maps["fdp_ports"].set(ctypes.c_uint32(0), val)

    def _apply_neighbours(self, plan: DatapathPlan) -> None:
        """fdp_neigh: exactly the plan's neighbours (who may send over UDP 6784, and what)."""
        m = self.maps["fdp_neigh"]
        want = {}
        for ip, n in plan.neighbours.items():
            flags = (abi.NeighFlags.KNOWN | (abi.NeighFlags.SEALED if n.sealed else 0)
                     | (abi.NeighFlags.XFRM if n.xfrm else 0))
            want[abi.ip_to_be32(ip)] = abi.Neigh(peer=n.short_id, mode=_MODE[n.mode], flags=flags)
        for key in list(m.keys()):
            if key.value not in want:
                m.delete(key)
        for ip_be, val in want.items():
            cur = m.get(ctypes.c_uint32(ip_be))
            if cur is None or bytes(cur) != bytes(val):
                m.set(ctypes.c_uint32(ip_be), val)

    def _apply_underlay(self, routes: Mapping[int, UnderlayRoute]) -> None:
        m = self.maps["fdp_underlay"]
        for sid in range(abi.MAX_PEERS):
            r = routes.get(sid)
            if r is None:
                cur = m.get(ctypes.c_uint32(sid))
                if cur is not None and cur.ifindex:
                    m.set(ctypes.c_uint32(sid), abi.Underlay())
                continue
            m.set(ctypes.c_uint32(sid), abi.Underlay(ifindex=r.ifindex, src_ip=abi.ip_to_be32(r.src_ip),
                                                     gw_ip=abi.ip_to_be32(r.gw_ip)))

    # ------------------------------------------------------------------ MAC ageing
    def mac_entries(self) -> list[ageing.MacSeen]:
        """Every learned entry of the MAC table (mac, flags, last seen)."""
        macs = self.maps["fdp_learned"]
        out = []
        for key in list(macs.keys()):
            e = macs.get(key)
            if e is not None:
                out.append(ageing.MacSeen(abi.mac_str(key.mac), e.flags, e.updated_ns))
        return out

    def age_macs(self, ageing_s: float, now_ns: int | None = None) -> list[str]:
        """Delete learned MACs not seen for ``ageing_s`` seconds; the MACs deleted.

        ``now_ns``: CLOCK_MONOTONIC ns (default: now), the clock the programs stamp
        entries with. Each candidate is read again just before its delete, so an
        entry refreshed by traffic since the scan stays.
        """
        now = time.monotonic_ns() if now_ns is None else now_ns
        macs = self.maps["fdp_learned"]
        removed = []
        for mac in ageing.stale(self.mac_entries(), now, ageing_s):
            key = abi.mac_key(mac)
            e = macs.get(key)
            if e is None or ageing.stale([ageing.MacSeen(mac, e.flags, e.updated_ns)], now, ageing_s) != [mac]:
                continue
            if macs.delete(key):
                removed.append(mac)
        removed += self.unlearn_local_macs()
        self.recount_learned()
        return removed

    def unlearn_local_macs(self) -> list[str]:
        """Delete learned entries for MACs that are local now; the MACs deleted.

        fdp_from_container asks fdp_learned before fdp_macs, so a local MAC must never
        be in both: one learned before its container attached here goes when it
        attaches, and one a program learned in the instant between (its fdp_macs
        check raced the attach) goes with the next ageing sweep."""
        learned = self.maps["fdp_learned"]
        removed = []
        for key in list(self.maps["fdp_macs"].keys()):
            if learned.delete(key):
                removed.append(abi.mac_str(key.mac))
        return removed

    def recount_learned(self) -> dict[int, int]:
        """Rewrite fdp_learn_count with the exact number of learned MACs per peer.

        The programs add one per MAC they learn but cannot see what the LRU evicts
        or the sweep deletes, so the count only drifts up between sweeps (a peer
        near its cap may be refused a MAC a little early). Returns peer -> count."""
        counts: dict[int, int] = {}
        learned = self.maps["fdp_learned"]
        for key in list(learned.keys()):
            e = learned.get(key)
            if e is not None:
                counts[e.peer] = counts.get(e.peer, 0) + 1
        m = self.maps["fdp_learn_count"]
        for sid in range(abi.MAX_PEERS):
            cur = m.get(ctypes.c_uint32(sid))
            want = counts.get(sid, 0)
            if cur is not None and cur.value != want:
                m.set(ctypes.c_uint32(sid), ctypes.c_uint32(want))
        return counts

    # ------------------------------------------------------------------ weaveDNS fast path
    def configure_dns(self, settings: dns_plan.DnsSettings | None) -> None:
        """Turn the DNS fast path on with ``settings`` (fdp_dns_config), or off (None): off,
        every query goes on to the userspace server."""
        cfg = abi.DnsConfig()
        if settings is not None:
            cfg.flags = abi.DNS_CONFIG_ENABLED
            cfg.listen_ip = abi.ip_to_be32(settings.listen_ip)
            cfg.listen_port = abi.be16_to_int(settings.listen_port)   # a u16 in network order
            cfg.rate_interval_ns = settings.rate_interval_ns
            cfg.rate_burst_ns = settings.rate_burst_ns
        m = self.maps["fdp_dns_config"]
        cur = m.get(ctypes.c_uint32(0))
        if cur is None or bytes(cur) != bytes(cfg):
            m.set(ctypes.c_uint32(0), cfg)
            # a new limit starts every source afresh (as a restarted server does)
            self.maps["fdp_dns_sources"].clear()

    def dns_entries(self) -> dict[bytes, dns_plan.DnsEntry]:
        """What fdp_dns_names holds: wire key (without its zero fill) -> entry."""
        out = {}
        m = self.maps["fdp_dns_names"]
        for key in list(m.keys()):
            e = m.get(key)
            if e is None:
                continue
            n = min(e.count, abi.DNS_MAX_ADDRS)
            out[dns_plan.key_unpadded(bytes(key.name))] = dns_plan.DnsEntry(e.ttl, tuple(abi.be32_to_ip(e.addrs[i]) for i in range(n)))
        return out

    def apply_dns(self, want: Mapping[bytes, dns_plan.DnsEntry]) -> dns_plan.DnsDiff:
        """Make fdp_dns_names hold exactly ``want`` (dns_plan.plan_entries): names gone are
        deleted first (a removed name is never answered again), then new and changed ones
        written. Returns what changed."""
        m = self.maps["fdp_dns_names"]
        diff = dns_plan.diff_entries(self.dns_entries(), want)
        for key in diff.delete:
            m.delete(_dns_key(key))
        for key, e in diff.upsert.items():
            val = abi.DnsEntry(count=len(e.addrs), ttl=e.ttl)
            for i, a in enumerate(e.addrs[:abi.DNS_MAX_ADDRS]):
                val.addrs[i] = abi.ip_to_be32(a)
            m.set(_dns_key(key), val)
        return diff

    def dns_stats(self) -> dict[str, int]:
        """The fast path's counters (fdp_dns_stats, summed over CPUs), every one named."""
        m = self.maps["fdp_dns_stats"]
        out = {}
        for idx, name in abi.DNS_STAT_NAMES.items():
            vals = m.get_percpu(ctypes.c_uint32(idx)) or []
            out[name] = sum(v.value for v in vals)
        return out

    # ------------------------------------------------------------------ counters
    def drops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        m = self.maps["fdp_drops"]
        for reason, name in abi.DROP_NAMES.items():
            vals = m.get_percpu(ctypes.c_uint32(reason)) or []
            total = sum(v.value for v in vals)
            if total:
                out[name] = total
        return out

    def peer_stats(self, names: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
        out = []
        m = self.maps["fdp_peer_stats"]
        for sid in sorted(set(names or {}) or range(abi.MAX_PEERS)):
            vals = m.get_percpu(ctypes.c_uint32(sid)) or []
            tot = {f: sum(getattr(v, f) for v in vals) for f in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")}
            if names is None and not any(tot.values()):
                continue
            out.append({"peer": (names or {}).get(sid, str(sid)), "short_id": sid, **tot})
        return out

    def flow_counts(self) -> list[tuple[abi.FlowKey, list[abi.FlowStats]]]:
        """Every flow's counters, per CPU, from both maps that hold them: its slot in
        fdp_flow_slots while it owns one, fdp_flows otherwise (fdp_abi.h, struct
        fdp_flow_slot). A count moving from a slot to fdp_flows as this reads may be
        seen in both or neither: for that one read only."""
        by_key: dict[bytes, tuple[abi.FlowKey, list[abi.FlowStats]]] = {}
        for key, vals in self.maps["fdp_flows"].items_percpu():
            by_key[bytes(key)] = (key, list(vals))
        slots = self.maps["fdp_flow_slots"]
        for idx in range(abi.FLOW_SLOTS):
            for slot in slots.get_percpu(ctypes.c_uint32(idx)) or []:
                if slot.st.packets:
                    by_key.setdefault(bytes(slot.key), (slot.key, []))[1].append(slot.st)
        return list(by_key.values())

    def flows(self, names: Mapping[int, str] | None = None, *, now_ns: int | None = None) -> list[dict[str, Any]]:
        out = []
        mono = now_ns if now_ns is not None else time.monotonic_ns()
        wall = time.time()
        for key, vals in self.flow_counts():
            packets = sum(v.packets for v in vals)
            if not packets:
                continue
            last = max(vals, key=lambda v: v.last_seen_ns)
            ip = key.ethertype == abi.be16_to_int(0x0800) or abi.be16_to_int(key.ethertype) == 0x0800
            out.append({
                "src_mac": abi.mac_str(key.src_mac), "dst_mac": abi.mac_str(key.dst_mac),
                "src_ip": abi.be32_to_ip(key.src_ip) if key.src_ip else None,
                "dst_ip": abi.be32_to_ip(key.dst_ip) if key.dst_ip else None,
                "proto": key.proto if ip else None,
                "sport": abi.be16_to_int(key.sport) or None, "dport": abi.be16_to_int(key.dport) or None,
                "ethertype": abi.be16_to_int(key.ethertype),
                "packets": packets, "bytes": sum(v.bytes for v in vals),
                "last_seen": round(wall - max(0.0, (mono - last.last_seen_ns) / 1e9), 3),
                "age_s": round(max(0.0, (mono - last.last_seen_ns) / 1e9), 3),
                # path: which datapath carried it (the report's contract); dir: what the
                # kernel did with the last frame (tx/rx/relay/flood toward/from `via`)
                "path": _FLOW_PATH.get(_PATH_NAMES.get(last.path, ""), "fastdp"),
                "dir": _PATH_NAMES.get(last.path, str(last.path)),
                "via": (names or {}).get(last.via_peer, str(last.via_peer)),
            })
        return out
