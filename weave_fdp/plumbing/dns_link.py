"""How containers reach their host's weaveDNS without ARP crossing the overlay.

Every router answers DNS on one address (default 169.254.53.53, the same on every
host) put on its ``weave`` bridge as a /32. A container gets a /32 route to it over
``ethwe`` and a *permanent* neighbour entry with the bridge's MAC, so it never asks
ARP for it (the other hosts, which hold the same address, are never asked). The
router's DNS sockets are bound to the bridge (SO_BINDTODEVICE), so their replies
leave through it to the container, on-link, without any route to the container
network on the host.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.errors import FdpError, NotFound
from weave_fdp.plumbing.container_link import CONTAINER_IFNAME, _open_target
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where, add_address
from weave_fdp.plumbing.weave_bridge import BRIDGE

NUD_PERMANENT = 0x80
SIOCGIFHWADDR = 0x8927      # <linux/sockios.h>: an interface's hardware address


def ensure_bridge_side(ip: str, mac: str | None = None, *, first: bool = True, netns: NetnsRef = None) -> str:
    """The bridge side of weaveDNS: a fixed bridge MAC (``mac``, else the current one) and
    ``ip``/32 on the bridge; the MAC. ``first``: set the MAC even if it already has that
    value (only a MAC set by hand stays fixed); later calls repair what changed (a bridge
    made again by the watchdog) and change nothing otherwise."""
    mac = pin_bridge_mac(mac, force=first, netns=netns)
    ensure_listen_address(ip, netns=netns)
    return mac


def bridge_side_intact(ip: str, mac: str | None, device: str = BRIDGE) -> bool:
    """Does ``device`` still have ``mac``, and is ``ip`` still ours? Two syscalls, no netlink:
    the router checks this every few seconds and repairs (:func:`ensure_bridge_side`) only
    when it says no, because a netlink session is tens of ms of Python on another of the
    router's threads, and the DNS server's thread waits for the GIL meanwhile."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", device.encode()))
            if mac is not None and raw[18:24].hex(":") != mac.lower():
                return False
            s.bind((ip, 0))             # EADDRNOTAVAIL once the address is gone
    except OSError:
        return False
    return True


def pin_bridge_mac(mac: str | None = None, *, force: bool = True, netns: NetnsRef = None) -> str:
    """Make the bridge's MAC fixed (a bridge otherwise takes the smallest MAC of its ports,
    which changes as containers come and go, and the containers' neighbour entries name
    it): ``mac`` when given (the one containers were told), else the current one. Returns it."""
    with _handle(netns) as ipr:
        idx = _index(ipr, BRIDGE)
        if idx is None:
            raise NotFound(f"bridge {BRIDGE} does not exist in {_where(netns)}",
                           fix="weaveDNS needs a data plane (fastdp or sleeve) running")
        current = str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))
        want = mac or current
        if want == current and not force:
            return want
        try:
            # set even when equal: a MAC set by hand is one the bridge keeps (NET_ADDR_SET)
            ipr.link("set", index=idx, address=want)
        except NetlinkError as exc:
            raise FdpError(f"cannot set the MAC of bridge {BRIDGE} to {want}: {exc}") from exc
        return want


def ensure_listen_address(ip: str, *, netns: NetnsRef = None) -> None:
    """Put ``ip``/32 on bridge ``weave`` (kept if there)."""
    add_address(BRIDGE, f"{ip}/32", netns, exist_ok=True)


def point_container(netns_path: str, ip: str, mac: str, ifname: str = CONTAINER_IFNAME) -> None:
    """In the container: a /32 route to ``ip`` over ethwe (or ``ifname``, e.g. a CNI
    container's eth0) and a permanent neighbour ``mac``."""
    cns = _open_target(netns_path)
    try:
        idx = cns.link_lookup(ifname=ifname)
        if not idx:
            raise NotFound(f"{netns_path} has no {ifname}", fix="attach it first")
        try:
            cns.route("replace", dst=f"{ip}/32", oif=idx[0], scope=253)   # scope link
            cns.neigh("replace", dst=ip, lladdr=mac, ifindex=idx[0], state=NUD_PERMANENT)
        except NetlinkError as exc:
            raise FdpError(f"cannot point {netns_path} at weaveDNS {ip}: {exc}") from exc
    finally:
        cns.close()
