"""The collect_md ("external") VXLAN device fastdp sends and receives through.

One per host, no learning and no FDB: the BPF programs set the tunnel key
(remote underlay IP, VNI) per packet, and read it on receive. Its name and UDP
port come from the caller (the fastdp datapath takes them from the ABI mirror).
"""

from __future__ import annotations

import errno

from pyroute2.netlink.exceptions import NetlinkError

from weave_fdp.errors import DatapathError, KernelFeatureMissing
from weave_fdp.plumbing.links import NetnsRef, _handle, _index, _where, delete_link

def ensure_vxlan(*, ifname: str, port: int, netns: NetnsRef = None, mtu: int | None = None) -> int:
    """Create (or keep) the external VXLAN device ``ifname`` on UDP ``port``, up; its index."""
    with _handle(netns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            kw = {"ifname": ifname, "kind": "vxlan", "vxlan_collect_metadata": 1,
                  "vxlan_port": port, "vxlan_learning": 0}
            if mtu is not None:
                kw["mtu"] = mtu
            try:
                ipr.link("add", **kw)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise DatapathError(f"cannot create {ifname} in {_where(netns)}: UDP port {port} "
                                        "is taken by another VXLAN device",
                                        fix="remove the other device (`weave-fdp reset`)") from exc
                if exc.code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
                    raise KernelFeatureMissing("this kernel has no VXLAN support",
                                               fix="load the vxlan module (`modprobe vxlan`)") from exc
                raise DatapathError(f"cannot create VXLAN device {ifname} in {_where(netns)}: {exc}") from exc
            idx = _index(ipr, ifname)
            assert idx is not None
        elif mtu is not None:
            ipr.link("set", index=idx, mtu=mtu)
        ipr.link("set", index=idx, state="up")
        return idx


def delete_vxlan(*, ifname: str, netns: NetnsRef = None) -> bool:
    """Delete the VXLAN device; False when it was not there."""
    return delete_link(ifname, netns)
