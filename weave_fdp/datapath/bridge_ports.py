"""Container ports on the ``weave`` bridge without BPF: the host object for sleeve-only routers.

With fastdp (``datapath.fastdp.host.HostDatapath``) attaching a container also installs
its port in the BPF maps. Without it (``--no-fastdp``, or a kernel where fastdp failed
to load) the bridge alone switches local frames and hands remote ones to the sleeve's
port, so attaching is just the veth pair and the addresses. Every remote frame then
crosses the sleeve, so where the kernel has BIG TCP containers build IPv4 super-frames of
four trains (``sizing.big_super_frame``; ``big``): the sleeve's per-frame costs are paid
once per ~250 KB, and peers that take frames over 64 KiB get them whole.
"""

from __future__ import annotations

from weave_fdp.datapath import hooks
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.loader import PROG_FROM_CONTAINER
from weave_fdp.datapath.plan import overlay_mtu
from weave_fdp.datapath.sleeve.sizing import big_super_frame, container_gso_max_size
from weave_fdp.plumbing import container_link, links, weave_bridge
from weave_fdp.plumbing.links import NetnsRef


class BridgePorts:
    """Same ``attach``/``detach`` surface as ``HostDatapath``, for ``router.containers``."""

    def __init__(self, *, netns: NetnsRef = None, mtu: int | None = None) -> None:
        self.netns = netns
        self.mtu = mtu
        self.big = False          # containers get IPv4 super-frames over 64 KiB (set by start)

    def start(self) -> None:
        if self.mtu is None:
            self.mtu = overlay_mtu(weave_bridge.underlay_mtu(netns=self.netns))
        weave_bridge.ensure_bridge(self.mtu, netns=self.netns)
        self.big = links.big_tcp_supported(self.netns)
        # a fastdp router ran here before: its program on the bridge (the host's port) would
        # steer the host's frames by maps nobody updates now
        hooks.detach(weave_bridge.BRIDGE, PROG_FROM_CONTAINER, prio=weave_bridge.HOST_TC_PRIO,
                     handle=weave_bridge.HOST_TC_HANDLE, direction="egress", netns=self.netns)

    def attach(self, netns_path: str, cidrs: list[str], *, multicast_route: bool = True,
               ifname: str = container_link.CONTAINER_IFNAME) -> container_link.ContainerLink:
        if self.mtu is None:
            self.start()
        assert self.mtu is not None
        underlay = self.mtu + abi.ENCAP_LEN
        return container_link.attach(netns_path, cidrs, mtu=self.mtu, host_netns=self.netns,
                                     multicast_route=multicast_route, ifname=ifname,
                                     gso_max_size=container_gso_max_size(underlay),
                                     gso_ipv4_max_size=big_super_frame(underlay) if self.big else None)

    def detach(self, netns_path: str) -> bool:
        return container_link.detach(netns_path, host_netns=self.netns)
