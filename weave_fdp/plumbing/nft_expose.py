"""The nftables table of `expose`: masquerading for the exposed subnets, nothing else.

One table, ``ip weave_fdp_expose``, rebuilt whole in one ``nft -f`` transaction from the
list of exposed subnets (so applying the same list twice changes nothing, and an empty
list removes the table). Per subnet S, in a NAT postrouting chain (as Weave's expose):

- ``ip saddr S ip daddr != S oifname != "weave" masquerade``: containers reaching beyond
  the weave network leave with the host's address;
- ``ip saddr != S ip daddr S oifname "weave" masquerade``: traffic the host forwards into
  S (e.g. DNAT to a container) arrives from the host's weave address, so replies return
  through the host.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from weave_fdp.errors import DependencyMissing, FdpError

TABLE = "weave_fdp_expose"
BRIDGE = "weave"


def ruleset(subnets: list[str]) -> str:
    """The nft script that makes the table hold exactly ``subnets``' rules."""
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}"]
    if subnets:
        lines.append(f"table ip {TABLE} {{")
        lines.append("  chain postrouting {")
        lines.append("    type nat hook postrouting priority srcnat; policy accept;")
        for s in subnets:
            net = ipaddress.IPv4Network(s, strict=False)
            lines.append(f'    ip saddr {net} ip daddr != {net} oifname != "{BRIDGE}" masquerade comment "expose {net}"')
            lines.append(f'    ip saddr != {net} ip daddr {net} oifname "{BRIDGE}" masquerade comment "expose {net}"')
        lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def apply(subnets: list[str]) -> None:
    """Make this network namespace's expose table match ``subnets``."""
    nft = shutil.which("nft")
    if nft is None:
        raise DependencyMissing("expose needs nftables (the nft program)", fix="apt-get install nftables")
    cp = subprocess.run([nft, "-f", "-"], input=ruleset(sorted(set(subnets))), capture_output=True,
                        text=True, timeout=10)
    if cp.returncode != 0:
        raise FdpError(f"nft refused the expose table: {cp.stderr.strip()[:300]}",
                       fix="check that the kernel has nf_tables and NAT (modprobe nft_masq)")


def current() -> str:
    """The table as nft lists it ('' when absent)."""
    nft = shutil.which("nft")
    if nft is None:
        return ""
    cp = subprocess.run([nft, "list", "table", "ip", TABLE], capture_output=True, text=True, timeout=10)
    return cp.stdout if cp.returncode == 0 else ""
