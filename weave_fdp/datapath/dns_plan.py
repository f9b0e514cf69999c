"""Which entries the kernel's DNS fast path holds (pure: no kernel, time passed in).

The fastdp program at every container veth answers a standard A query for a name of
the map ``fdp_dns_names`` (bpf/lib/dns.h); everything else goes on to weaveDNS's
userspace server. This module says what that map must hold for a snapshot of the
records, so that the kernel answers exactly what the server would:

- names in the DNS domain (not the domain itself) with at least one live address and
  at most ``DNS_MAX_ADDRS`` of them (more: the server answers, and truncates);
- keyed by the lower-cased name in wire format (at most ``DNS_NAME_MAX`` bytes), the
  way the program builds its key from the question;
- at most ``DNS_MAX_NAMES`` of them (the first in name order: deterministic), the rest
  answered by the server;
- the TTL of ``--dns-ttl``.

It also turns ``--dns-rate-limit`` into the program's GCRA parameters, and says which
entries to write and delete to get from what the map holds to what it must hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from weave_fdp.datapath.fastdp import abi

NS = 1_000_000_000


@dataclass(frozen=True)
class DnsEntry:
    """One name's answer: its TTL (s) and addresses (any order: the program shuffles)."""

    ttl: int
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class DnsSettings:
    """What the program needs besides the names (``fdp_dns_config``)."""

    listen_ip: str
    listen_port: int
    rate_interval_ns: int     # ns between queries of one source at the rate (0: no limit)
    rate_burst_ns: int        # (burst - 1) * interval: how far a source may run ahead


@dataclass(frozen=True)
class DnsDiff:
    upsert: dict[bytes, DnsEntry]
    delete: list[bytes]


def fqdn_lower(name: str) -> str:
    n = name.lower()
    return n if n.endswith(".") else n + "."


def in_domain(name: str, domain: str) -> bool:
    """``name`` is ``domain`` or below it (case-insensitive), as the server decides."""
    n, d = fqdn_lower(name), fqdn_lower(domain)
    return n == d or n.endswith("." + d)


def wire_key(name: str, name_max: int = abi.DNS_NAME_MAX) -> bytes | None:
    """``name`` lower-cased in DNS wire format (length-prefixed labels, then 0), or None
    when the program cannot hold it: longer than ``name_max`` bytes, an empty label or
    one longer than 63 bytes, or a byte that is not ASCII."""
    try:
        raw = fqdn_lower(name).encode("ascii")
    except UnicodeEncodeError:
        return None
    labels = raw.split(b".")[:-1]
    if not labels or any(not 1 <= len(label) <= 63 for label in labels):
        return None
    out = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return out if len(out) <= name_max else None


def name_of_key(key: bytes) -> str:
    """The name a wire key holds (``web.weave.local.``); the inverse of :func:`wire_key`."""
    labels, i = [], 0
    while i < len(key) and key[i]:
        n = key[i]
        labels.append(key[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels) + "."


def plan_entries(names: Mapping[str, Iterable[str]], domain: str, ttl: int, *,
                 max_addrs: int = abi.DNS_MAX_ADDRS, max_names: int = abi.DNS_MAX_NAMES,
                 name_max: int = abi.DNS_NAME_MAX) -> dict[bytes, DnsEntry]:
    """The map's entries for ``names`` (a snapshot: lower-case name -> live addresses)."""
    dom = fqdn_lower(domain)
    out: dict[bytes, DnsEntry] = {}
    for name in sorted(names):
        if len(out) >= max_names:
            break
        n = fqdn_lower(name)
        if n == dom or not in_domain(n, dom):
            continue                       # the domain itself, or a name the server forwards
        addrs = tuple(dict.fromkeys(names[name]))
        if not 1 <= len(addrs) <= max_addrs:
            continue
        key = wire_key(n, name_max)
        if key is None or key in out:
            continue
        out[key] = DnsEntry(int(ttl), addrs)
    return out


def diff_entries(current: Mapping[bytes, DnsEntry], want: Mapping[bytes, DnsEntry]) -> DnsDiff:
    """What to write (new or changed; address order does not count) and delete."""
    upsert = {k: v for k, v in want.items()
              if k not in current or current[k].ttl != v.ttl or sorted(current[k].addrs) != sorted(v.addrs)}
    return DnsDiff(upsert, sorted(k for k in current if k not in want))


def rate_settings(rate: float, burst: float) -> tuple[int, int]:
    """(interval ns, burst ns) of ``rate`` queries/s per source, ``burst`` at once:
    what the program's GCRA needs to admit what the server's token bucket admits.
    ``rate`` <= 0: no limit (0, 0)."""
    if rate <= 0:
        return 0, 0
    interval = max(1, round(NS / rate))
    return interval, int(max(1.0, burst) - 1) * interval


def key_bytes(key: bytes, name_max: int = abi.DNS_NAME_MAX) -> bytes:
    """``key`` zero-filled to the map's key size."""
    return key.ljust(name_max, b"\0")


def key_unpadded(raw: bytes) -> bytes:
    """A key as the map holds it, without its zero fill: the wire name up to and including
    its root byte (the inverse of :func:`key_bytes`)."""
    i = 0
    while i < len(raw) and raw[i]:
        i += 1 + raw[i]
    return raw[:min(i + 1, len(raw))]
