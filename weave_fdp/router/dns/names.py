"""Name and address rules of weaveDNS (pure).

Names are stored as fully qualified, with a trailing dot, as supplied (case kept for
display); every comparison is case-insensitive. Names live inside the router's
domain (default ``weave.local.``); a bare label ``web`` means ``web.<domain>``.
"""

from __future__ import annotations

import ipaddress
import re

from weave_fdp.errors import UsageError

DEFAULT_DOMAIN = "weave.local."
DEFAULT_TTL = 1                      # seconds: answers change as containers come and go
MAX_NAME = 253                       # characters of a name without the trailing dot (RFC 1035)
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
REVERSE_SUFFIX = ".in-addr.arpa."


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def check_name(name: str, what: str = "name") -> str:
    """``name`` with a trailing dot; UsageError naming the bad label otherwise."""
    if not isinstance(name, str) or not name.strip("."):
        raise UsageError(f"empty {what}", fix="give a host name such as web or web.weave.local")
    name = fqdn(name)
    if len(name) - 1 > MAX_NAME:
        raise UsageError(f"{what} {name!r} is longer than {MAX_NAME} characters", fix="use a shorter name")
    for label in name[:-1].split("."):
        if not _LABEL.match(label):
            raise UsageError(f"{what} {name!r} has a bad label {label!r}",
                             fix="use letters, digits, '-' and '_' (at most 63 per label)")
    return name


def check_domain(domain: str) -> str:
    """The DNS domain (``--dns-domain``), fully qualified."""
    return check_name(domain, "--dns-domain")


def in_domain(name: str, domain: str) -> bool:
    n, d = fqdn(name).lower(), fqdn(domain).lower()
    return n == d or n.endswith("." + d)


def qualify(name: str, domain: str) -> str:
    """A user's name in ``domain``: ``web`` -> ``web.weave.local.``; a name already in the
    domain is kept; a name elsewhere is refused (this server answers only its domain)."""
    if not isinstance(name, str) or not name:
        raise UsageError("empty name", fix="give a host name such as web or web.weave.local")
    if "." not in name.rstrip("."):
        return check_name(f"{name.rstrip('.')}.{domain}")
    name = check_name(name)
    if not in_domain(name, domain) or name.lower() == fqdn(domain).lower():
        raise UsageError(f"name {name!r} is outside the DNS domain {domain}",
                         fix=f"use NAME or NAME.{domain}")
    return name


def label_from_target(target: str) -> str | None:
    """The name a container gets from its target: the namespace or container name
    (``netns:web1`` -> ``web1``); None for ``pid:`` targets and namespace paths (no name of
    their own)."""
    if target.startswith(("pid:", "/")):
        return None
    name = target[6:] if target.startswith("netns:") else target.lstrip("/")
    return name or None


def check_ipv4(addr: str, network: str | None = None) -> str:
    """A dotted IPv4 address (an optional /prefix is dropped), inside ``network`` when given."""
    if not isinstance(addr, str):
        raise UsageError(f"bad address {addr!r}", fix="give an IPv4 address such as 10.32.1.1")
    text = addr[3:] if addr.startswith("ip:") else addr
    try:
        ip = ipaddress.IPv4Interface(text).ip
    except ValueError:
        raise UsageError(f"bad address {addr!r}", fix="give an IPv4 address such as 10.32.1.1") from None
    if network is not None and ip not in ipaddress.IPv4Network(network, strict=False):
        raise UsageError(f"address {ip} is outside the weave network {network}",
                         fix=f"give an address in {network} (--ipalloc-range)")
    return str(ip)


def reverse_to_ipv4(qname: str) -> str | None:
    """``4.3.2.1.in-addr.arpa.`` -> ``1.2.3.4``; None for anything else."""
    name = fqdn(qname).lower()
    if not name.endswith(REVERSE_SUFFIX):
        return None
    parts = name[: -len(REVERSE_SUFFIX)].split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return None
    return ".".join(str(int(p)) for p in reversed(parts))
