"""Keeps a host's fastdp whole: finds what was removed under it and puts it back.

Someone (an operator, another tool, a `tc qdisc del` in a script) may delete the
VXLAN device or the bridge, or detach our programs from a hook. The kernel then
drops or misroutes frames silently. The router asks :func:`find_damage` every few
seconds (a netlink dump per hook, no subprocess) and calls :func:`repair`, which
is a restart of the host's datapath: devices ensured, programs reloaded and
re-attached, the plan re-applied to the pinned maps (their state survives).

Container veths that vanished are not damage: the container is gone (its
namespace died). :func:`prune_ports` forgets them so the plan stops naming them.
"""

from __future__ import annotations

import logging
from typing import Any

from weave_fdp.datapath import hooks
from weave_fdp.datapath.fastdp.loader import PROG_FROM_CONTAINER, PROG_FROM_TUNNEL, PROG_FROM_UNDERLAY, VXLAN_IFNAME
from weave_fdp.plumbing import container_link, weave_bridge
from weave_fdp.plumbing.links import link_index

log = logging.getLogger(__name__)


def prune_ports(host: Any) -> list[str]:
    """Forget container ports whose veth is gone; returns their names (the plan is re-applied)."""
    live = container_link.host_links(host_netns=host.netns)
    gone = [name for name in host.ports if name not in live]
    for name in gone:
        host.ports.pop(name, None)
    if gone:
        log.info("fastdp: container ports gone with their containers: %s", ", ".join(gone))
        if host.mesh is not None:
            host.set_mesh(host.mesh)     # re-plan without them
    return gone


def find_damage(host: Any) -> list[str]:
    """What is missing of the datapath ``host`` (a HostDatapath) set up; empty when whole."""
    ns = host.netns
    damage: list[str] = []
    if link_index(weave_bridge.BRIDGE, ns) is None:
        damage.append(f"bridge {weave_bridge.BRIDGE} is gone")
    elif host.bridge_port is not None and PROG_FROM_CONTAINER not in hooks.programs(
            weave_bridge.BRIDGE, direction="egress", netns=ns):
        damage.append(f"{PROG_FROM_CONTAINER} is not attached to {weave_bridge.BRIDGE} egress (the host's port)")
    if link_index(VXLAN_IFNAME, ns) is None:
        damage.append(f"device {VXLAN_IFNAME} is gone")
    elif PROG_FROM_TUNNEL not in hooks.programs(VXLAN_IFNAME, netns=ns):
        damage.append(f"{PROG_FROM_TUNNEL} is not attached to {VXLAN_IFNAME}")
    live = container_link.host_links(host_netns=ns)
    for name in sorted(host.ports):
        if name in live and PROG_FROM_CONTAINER not in hooks.programs(name, netns=ns):
            damage.append(f"{PROG_FROM_CONTAINER} is not attached to {name}")
    for dev in sorted(host.underlay_devs):
        if link_index(dev, ns) is not None and PROG_FROM_UNDERLAY not in hooks.programs(dev, netns=ns):
            damage.append(f"{PROG_FROM_UNDERLAY} is not attached to {dev}")
    return damage


def repair(host: Any) -> None:
    """Rebuild what :func:`find_damage` reported: the host's datapath restarted in place.

    A deleted bridge leaves its ports (container veths, the sleeve's end) without a
    master: they are put back on the new bridge. The maps keep everything else.
    """
    host.stop()
    host.underlay_devs.clear()     # hooks are re-attached by the plan's next apply
    host.start()
    container_link.reattach_orphans(host_netns=host.netns)
