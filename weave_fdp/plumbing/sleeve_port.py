"""The sleeve's port on bridge ``weave``: veth pair ``vethwe-bridge`` (enslaved) / ``vethwe-pcap``
(where the sleeve captures and injects with AF_PACKET).

Offloads stay on (TSO/GSO, checksum): the sleeve reads whole GSO super-frames with
their virtio_net_hdr, which is what makes a userspace path fast. The MTU of the
pair is large so it never cuts what the bridge forwards; the containers' MTU and
the sleeve's ICMP "fragmentation needed" govern frame sizes. With ``gso_ipv4_max_size``
(kernels with BIG TCP) both ends pass IPv4 super-frames that big: the bridge would cut
bigger ones than its egress port passes into single segments.
"""

from __future__ import annotations

from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import netns_ipr

BRIDGE = "weave"
BRIDGE_END = "vethwe-bridge"
PCAP_END = "vethwe-pcap"
PORT_MTU = 65535


def ensure_sleeve_port(netns: str | None = None, *, bridge: str = BRIDGE, mtu: int = PORT_MTU,
                       gso_ipv4_max_size: int | None = None) -> str:
    """Create (idempotently) the pair on ``bridge`` in ``netns``; returns the capture interface
    name. ``gso_ipv4_max_size``: set on both ends where the kernel has BIG TCP."""
    with netns_ipr(netns) as ipr:
        if links.link_index(bridge, ipr) is None:
            links.create_bridge(bridge, netns=ipr)
        if links.link_index(BRIDGE_END, ipr) is None:
            links.create_veth(BRIDGE_END, PCAP_END, netns=ipr, mtu=mtu, up=False)
        links.set_master(BRIDGE_END, bridge, ipr)
        links.set_up(BRIDGE_END, ipr)
        links.set_up(PCAP_END, ipr)
        if gso_ipv4_max_size is not None and links.big_tcp_supported(ipr):
            for dev in (BRIDGE_END, PCAP_END):
                links.set_gso_ipv4_max_size(dev, gso_ipv4_max_size, ipr)
    # Best effort: no IPv6 link-local chatter from our own port.
    for dev in (BRIDGE_END, PCAP_END):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError:
            pass
    return PCAP_END


def remove_sleeve_port(netns: str | None = None) -> bool:
    """Delete the pair; False when it was already gone."""
    return links.delete_link(BRIDGE_END, netns)
