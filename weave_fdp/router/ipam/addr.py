"""IPv4 addresses and ranges as integers: the one place that parses IPAM's CIDRs.

A range is a half-open interval ``(lo, hi)`` of integer addresses. A subnet's first
and last addresses (network, broadcast) are never handed out (RFC 1122), as Weave does.
"""

from __future__ import annotations

import ipaddress

from weave_fdp.errors import UsageError

Range = tuple[int, int]   # [lo, hi)


def parse_cidr(text: str, what: str = "CIDR") -> ipaddress.IPv4Network:
    """A network from ``text`` (host bits dropped); UsageError naming ``what`` otherwise."""
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{what} {text!r} is not an IPv4 CIDR", fix="write e.g. 10.32.0.0/12") from exc


def net_range(net: ipaddress.IPv4Network) -> Range:
    return int(net.network_address), int(net.broadcast_address) + 1


def to_net(r: Range) -> ipaddress.IPv4Network:
    """The network a subnet range came from (``r`` must be a CIDR block)."""
    size = r[1] - r[0]
    return ipaddress.IPv4Network((r[0], 32 - (size.bit_length() - 1)))


def ip(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


def ip_int(text: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{text!r} is not an IPv4 address", fix="e.g. 10.32.0.1") from exc


def fmt_range(r: Range) -> str:
    """Weave's form of a range: ``10.32.0.0-10.47.255.255``."""
    return f"{ip(r[0])}-{ip(r[1] - 1)}"


def host_bounds(subnet: Range) -> Range:
    """The addresses of ``subnet`` that may be handed out (network and broadcast excluded)."""
    lo, hi = subnet
    if hi - lo <= 2:
        return lo, lo   # /31 and /32 have no host address to give
    return lo + 1, hi - 1


def intersect(a: Range, b: Range) -> Range | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


def contains(outer: Range, inner: Range) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]
