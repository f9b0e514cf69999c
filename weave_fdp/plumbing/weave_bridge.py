"""The bridge ``weave`` every container veth joins, and the underlay MTU it is sized from.

The bridge delivers frames between containers of one host and hands frames to
the sleeve's port; fastdp's tc programs bypass it for traffic to other hosts.
Multicast snooping is off so multicast reaches every container (as broadcast
does), which is what Weave users expect.
"""

from __future__ import annotations

from weave_fdp.errors import NotFound
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where, create_bridge, delete_link, set_mtu

BRIDGE = "weave"
# fastdp's filter at the bridge's tc egress (the host's own port): its priority and handle
HOST_TC_PRIO = 1
HOST_TC_HANDLE = 1


def underlay_mtu(ifname: str | None = None, *, netns: NetnsRef = None) -> int:
    """MTU of the underlay: ``ifname``, else the device of the default route, else the
    smallest MTU of the up, non-loopback, non-overlay devices."""
    with _handle(netns) as ipr:
        if ifname is not None:
            idx = _index(ipr, ifname)
            if idx is None:
                raise NotFound(f"underlay interface {ifname} does not exist in {_where(netns)}")
            return int(ipr.get_links(idx)[0].get_attr("IFLA_MTU"))
        for route in ipr.get_default_routes(family=2):
            oif = route.get_attr("RTA_OIF")
            if oif:
                return int(ipr.get_links(oif)[0].get_attr("IFLA_MTU"))
        mtus = []
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo" or name == BRIDGE or name.startswith(("vethwe", "vxlan-")):
                continue
            if link["flags"] & 1:  # IFF_UP
                mtus.append(int(link.get_attr("IFLA_MTU")))
        return min(mtus) if mtus else 1500


def ensure_bridge(mtu: int, *, netns: NetnsRef = None) -> int:
    """Create (or keep) bridge ``weave`` with ``mtu``, up; its index."""
    idx = create_bridge(BRIDGE, netns=netns, mtu=mtu, exist_ok=True, br_mcast_snooping=0)
    set_mtu(BRIDGE, mtu, netns=netns)
    return idx


def delete_bridge(*, netns: NetnsRef = None) -> bool:
    """Delete bridge ``weave``; False when it was not there."""
    return delete_link(BRIDGE, netns=netns)
