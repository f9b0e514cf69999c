"""Remove everything the data paths installed on this host (``weave-fdp reset``).

Works with the router stopped: programs, pinned maps, the VXLAN device, the bridge,
the sleeve port, every container link and the xfrm states and policies of encrypted
fastdp go. Idempotent.
"""

from __future__ import annotations

from weave_fdp.plumbing import xfrm
from weave_fdp.plumbing.sleeve_port import remove_sleeve_port


def reset_datapaths() -> dict[str, list[str]]:
    """Tear down fastdp and sleeve state of the host this process runs in; names removed."""
    # Imported here: `reset` needs the fastdp modules only when fastdp was used.
    from weave_fdp.datapath.fastdp.host import reset_host
    from weave_fdp.datapath.fastdp.pins import host_pin_dir

    removed = reset_host(pin_dir=host_pin_dir(create=False))
    if remove_sleeve_port():
        removed["links"].append("vethwe-pcap")
    from weave_fdp.datapath.fastdp.abi import VXLAN_PORT

    n = xfrm.flush(VXLAN_PORT)
    if n:
        removed["links"].append(f"{n} xfrm states and policies")
    return removed
