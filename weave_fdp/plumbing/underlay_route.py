"""How this host reaches a peer's underlay address: the route's device, source and gateway.

The fastdp direct path writes the outer IPv4 header itself and hands the packet to
the neighbour table of the underlay device, so it needs, per next hop, what a
route lookup would say. It asks once per plan (not per packet, which is what the
collect_md VXLAN device pays).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.plumbing.links import NetnsRef, _handle

log = logging.getLogger(__name__)

RTN_UNICAST = 1


class RouteInfo(NamedTuple):
    ifindex: int
    ifname: str
    src: str        # preferred source address
    gateway: str    # the neighbour to send to: the gateway, or ``dst`` itself when on-link


def route_to(dst: str, *, netns: NetnsRef = None) -> RouteInfo | None:
    """The route this host would use toward ``dst`` (IPv4), or None when there is none
    usable (unreachable, local, not unicast, no source address, loopback)."""
    with _handle(netns) as ipr:
        try:
            msgs = ipr.route("get", dst=dst)
        except NetlinkError as exc:
            log.debug("no route to %s: %s", dst, exc)
            return None
        if not msgs:
            return None
        msg = msgs[0]
        if msg.get("type", RTN_UNICAST) != RTN_UNICAST:
            return None
        oif, src = msg.get_attr("RTA_OIF"), msg.get_attr("RTA_PREFSRC")
        if not oif or not src:
            return None
        links = ipr.get_links(oif)
        name = links[0].get_attr("IFLA_IFNAME") if links else None
        if not name or name == "lo":
            return None
        return RouteInfo(int(oif), name, src, msg.get_attr("RTA_GATEWAY") or dst)
