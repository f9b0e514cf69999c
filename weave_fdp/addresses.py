"""Container addresses: one set of rules for every way in (pure; no kernel, no router).

``attach``/``detach``/``expose``/``hide`` (CLI and API), the CNI plugin, the IPAM
ops and the plumbing that finally sets the address all check with these, so an
address accepted by one is accepted by all. The grammar is Weave's:
``[ip:]CIDR | net:CIDR | net:default``.

Rules for an explicit address (:func:`host_cidr`):

- IPv4 ``ADDRESS/PREFIXLEN`` (the CNI plugin may supply a default prefix length);
- a host address of its subnet: not the network address, and not the broadcast
  address (subnets of /31 and /32 have neither, RFC 3021);

and for a subnet to allocate from (:func:`subnet`): IPv4 ``NETWORK/PREFIXLEN`` (host
bits dropped) with at least one host address (/30 or larger).

Errors are ``UsageError`` naming the item and the fix; callers with another error
vocabulary (CNI) translate them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from weave_fdp.errors import UsageError

EXAMPLE = "10.32.1.1/12"


def host_cidr(text: Any, *, what: str = "address", default_prefix: int | None = None) -> str:
    """``text`` as a normalized IPv4 host ``ADDRESS/PREFIXLEN``; UsageError otherwise."""
    if not isinstance(text, str):
        raise UsageError(f"{what} {text!r} is not a string", fix=f"e.g. {EXAMPLE}")
    cidr = text
    if "/" not in cidr:
        if default_prefix is None:
            raise UsageError(f"{what} {text!r} lacks a prefix length", fix=f"e.g. {EXAMPLE}")
        cidr = f"{cidr}/{default_prefix}"
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise UsageError(f"bad {what} {text!r}", fix=f"use ADDRESS/PREFIXLEN, e.g. {EXAMPLE}") from exc
    if iface.version != 4:
        raise UsageError(f"{what} {text} is not IPv4", fix="weave-fdp carries IPv4 addresses")
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        which = "network" if iface.ip == net.network_address else "broadcast"
        raise UsageError(f"{what} {text} is the {which} address of its subnet", fix="pick a host address")
    return str(iface)


def host_cidrs(texts: list[Any], *, what: str = "address") -> list[str]:
    return [host_cidr(t, what=what) for t in texts]


def subnet(text: Any, *, what: str = "subnet") -> str:
    """``text`` as a normalized IPv4 ``NETWORK/PREFIXLEN`` with a host address; UsageError otherwise."""
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad {what} {text!r}", fix="use SUBNET/PREFIXLEN, e.g. 10.32.5.0/24") from exc
    if "/" not in str(text):
        raise UsageError(f"{what} {text!r} lacks a prefix length", fix="e.g. 10.32.5.0/24")
    if net.num_addresses < 4:
        raise UsageError(f"{what} {net} has no address for a host", fix="ask for a subnet of /30 or larger")
    return str(net)


@dataclass(frozen=True)
class AddrSpec:
    """One ADDR of attach/detach/expose/hide: an explicit address, or a subnet to allocate from."""

    kind: str                # "ip" | "net"
    cidr: str | None         # "10.32.1.1/12" (ip), "10.32.5.0/24" (net) or None (net:default)

    def __str__(self) -> str:
        return f"{self.kind}:{self.cidr or 'default'}"


def parse_specs(addrs: list[Any]) -> list[AddrSpec]:
    """Weave's grammar: ``CIDR | ip:CIDR | net:CIDR | net:default``; UsageError naming the bad item."""
    out = []
    for a in addrs:
        if not isinstance(a, str):
            raise UsageError(f"address {a!r} is not a string")
        if a == "net:default":
            out.append(AddrSpec("net", None))
        elif a.startswith("net:"):
            out.append(AddrSpec("net", subnet(a[4:])))
        else:
            out.append(AddrSpec("ip", host_cidr(a[3:] if a.startswith("ip:") else a, what="address")))
    return out


def explicit_cidrs(addrs: list[Any]) -> list[str]:
    """The CIDRs of explicit ``[ip:]CIDR`` items (``net:`` forms need IPAM: UsageError)."""
    specs = parse_specs(addrs)
    nets = [s for s in specs if s.kind == "net"]
    if nets:
        raise UsageError(f"{nets[0]}: allocation from a subnet needs IPAM, which is off in this router",
                         fix=f"give an explicit CIDR, e.g. {EXAMPLE}, or launch with an --ipalloc-range")
    return [str(s.cidr) for s in specs]
