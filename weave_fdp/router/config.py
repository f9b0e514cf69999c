"""Router configuration (the `weave-fdp launch` flags), validated once."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from weave_fdp.errors import UsageError
from weave_fdp.router.ipam.addr import Range, intersect, net_range, parse_cidr
from weave_fdp.router.ipam.allocator import Mode
from weave_fdp.router.mesh.codec import MAX_HOSTNAME, nickname_problem

DEFAULT_PORT = 6783
DEFAULT_CONN_LIMIT = 200
DEFAULT_METRICS_ADDR = "127.0.0.1:6782"   # where `launch` serves /metrics unless told otherwise (Weave's)
MTU_MIN, MTU_MAX = 576, 9000   # bytes: the overlay MTU `--mtu` accepts (IPv4 minimum .. jumbo frames)
_OCTET = re.compile(r"^[0-9a-fA-F]{1,2}$")


def parse_peer_name(text: str) -> str:
    """A peer name as Weave reads it -> the canonical ``xx:xx:xx:xx:xx:xx`` form.

    Six groups of one or two hex digits, or Weave's short forms: one ``::`` standing
    for the zero octets that make six, with one to four groups around it
    (``::1`` -> 00:00:00:00:00:01, ``a::1`` -> 0a:00:00:00:00:01). UsageError otherwise.
    """
    bad = UsageError(f"--name {text!r} is not a peer name",
                     fix="give a MAC address such as 7e:aa:bb:cc:dd:ee (or a short form such as ::1)")
    t = text.strip()
    if t.count("::") > 1:
        raise bad
    if "::" in t:
        head, tail = t.split("::")
        left = head.split(":") if head else []
        right = tail.split(":") if tail else []
        if not 1 <= len(left) + len(right) <= 4:
            raise bad
        groups = [*left, *["0"] * (6 - len(left) - len(right)), *right]
    else:
        groups = t.split(":")
        if len(groups) != 6:
            raise bad
    if not all(_OCTET.match(g) for g in groups):
        raise bad
    return ":".join(f"{int(g, 16):02x}" for g in groups)


@dataclass
class RouterConfig:
    """Everything `launch` accepts; the daemon and its parts read it."""

    peers: list[str] = field(default_factory=list)
    name: str | None = None
    nickname: str | None = None
    password: str | None = None
    trusted_subnets: list[str] = field(default_factory=list)
    port: int = DEFAULT_PORT
    conn_limit: int = DEFAULT_CONN_LIMIT
    discovery: bool = True
    no_fastdp: bool = False
    no_dns: bool = False
    dns_domain: str = "weave.local."
    dns_ttl: int = 1                      # seconds
    dns_listen_address: str = "169.254.53.53"   # IPv4[:PORT] on the weave bridge (docs/DNS.md)
    dns_rate_limit: float = 1000.0        # queries/s per source address; 0 = unlimited
    ipalloc_range: str = "10.32.0.0/12"            # "" turns IPAM off
    ipalloc_default_subnet: str | None = None      # default: the range
    ipalloc_init: str | None = None                # consensus[=N] | seed=NAME,... | observer
    state_dir: Path | None = None
    log_level: str = "info"
    listen_host: str = "0.0.0.0"
    metrics_addr: str | None = None   # HOST:PORT for Prometheus /metrics; None = off
    metrics_optional: bool = False    # the default address: a busy port is a warning, not a failure
    resume: bool = False              # keep the saved target list (launch --resume, a restart)
    mtu: int | None = None            # overlay MTU (--mtu, WEAVE_MTU); None = underlay MTU - 50

    def validate(self) -> "RouterConfig":
        """Raise UsageError naming the bad flag and its fix."""
        if self.name is not None:
            self.name = parse_peer_name(self.name)
        if self.nickname is not None:
            problem = nickname_problem(self.nickname)
            if problem:
                raise UsageError(f"--nickname {problem}", fix="give a shorter, printable nickname (e.g. the hostname)")
        if self.mtu is not None and not MTU_MIN <= self.mtu <= MTU_MAX:
            raise UsageError(f"--mtu {self.mtu} is out of range", fix=f"use {MTU_MIN}-{MTU_MAX}")
        if not 1 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is out of range", fix="use 1-65535")
        if self.conn_limit < 1:
            raise UsageError(f"--conn-limit {self.conn_limit} must be at least 1")
        for cidr in self.trusted_subnets:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise UsageError(f"--trusted-subnets: {cidr!r} is not a CIDR",
                                 fix="write e.g. 192.0.2.0/24") from exc
        if self.ipalloc_range:
            self.ipam_settings()
        for peer in self.peers:
            parse_peer_address(peer, self.port)
        if self.metrics_addr is not None:
            parse_metrics_addr(self.metrics_addr)
        self._validate_dns()
        return self

    def ipam_settings(self) -> tuple[Range, Range, Mode] | None:
        """(range, default subnet, mode) from the --ipalloc-* flags; None when IPAM is off."""
        if not self.ipalloc_range:
            return None
        net = parse_cidr(self.ipalloc_range, "--ipalloc-range")
        if net.num_addresses < 4:
            raise UsageError(f"--ipalloc-range {net} has no address for a host",
                             fix="give a range of /30 or larger, e.g. 10.32.0.0/12")
        rng = net_range(net)
        sub = rng
        if self.ipalloc_default_subnet:
            sn = parse_cidr(self.ipalloc_default_subnet, "--ipalloc-default-subnet")
            sub = net_range(sn)
            if intersect(sub, rng) is None:
                raise UsageError(f"--ipalloc-default-subnet {sn} does not overlap --ipalloc-range {net}",
                                 fix="give a subnet inside the range")
            if sn.num_addresses < 4:
                raise UsageError(f"--ipalloc-default-subnet {sn} has no address for a host",
                                 fix="give a subnet of /30 or larger")
        return rng, sub, parse_ipalloc_init(self.ipalloc_init, len(self.peers))

    def _validate_dns(self) -> None:
        from weave_fdp.router.dns.names import check_domain
        from weave_fdp.router.dns.service import parse_listen

        self.dns_domain = check_domain(self.dns_domain)
        if not 0 <= self.dns_ttl <= 86400:
            raise UsageError(f"--dns-ttl {self.dns_ttl} is out of range", fix="give seconds, 0-86400")
        if self.dns_rate_limit < 0:
            raise UsageError(f"--dns-rate-limit {self.dns_rate_limit:g} is negative",
                             fix="give queries per second per source, or 0 for no limit")
        parse_listen(self.dns_listen_address)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["state_dir"] = str(self.state_dir) if self.state_dir else None
        d["password"] = None  # never leaves the process
        return d


def parse_ipalloc_init(text: str | None, launch_peers: int) -> Mode:
    """``--ipalloc-init``: ``consensus[=N]`` (quorum N//2+1; default N = peers named at launch + 1),
    ``seed=NAME,...`` (peer names) or ``observer``."""
    t = (text or "consensus").strip()
    if t == "observer":
        return Mode("observer")
    if t == "consensus" or t.startswith("consensus="):
        n = launch_peers + 1
        if "=" in t:
            v = t.split("=", 1)[1]
            if not v.isdigit() or int(v) < 1:
                raise UsageError(f"--ipalloc-init {t!r}: N must be a positive number", fix="e.g. consensus=3")
            n = int(v)
        return Mode("consensus", quorum=n // 2 + 1)
    if t.startswith("seed="):
        names = []
        for x in (x.strip() for x in t[5:].split(",")):
            try:
                names.append(parse_peer_name(x))
            except UsageError:
                names = []
                break
        if not names:
            raise UsageError(f"--ipalloc-init {t!r}: seeds must be peer names",
                             fix="e.g. seed=7e:aa:bb:cc:dd:01,7e:aa:bb:cc:dd:02 or seed=::1,::2 (see --name)")
        return Mode("seed", seeds=tuple(sorted(set(names))))
    raise UsageError(f"--ipalloc-init {t!r} is not consensus[=N], seed=NAME,... or observer",
                     fix="e.g. --ipalloc-init consensus=3")


def parse_peer_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); UsageError with the fix otherwise.

    Host names are accepted (resolved when dialing); IPv6 literals go in brackets.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty peer address", fix="give HOST or HOST:PORT, e.g. 192.0.2.1")
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"peer address {text!r}: missing ']'", fix="write [2001:db8::1]:6783")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"peer address {text!r} is malformed", fix="write [2001:db8::1]:6783")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, text)
    if not host or not re.match(r"^[A-Za-z0-9.:_-]+$", host):
        raise UsageError(f"peer address {text[:80]!r} is not HOST[:PORT]", fix="e.g. 192.0.2.1 or host2:6783")
    if len(host) > MAX_HOSTNAME:
        raise UsageError(f"peer address {text[:40]!r}... is {len(host)} characters long",
                         fix=f"host names have at most {MAX_HOSTNAME} characters")
    return host, port


def parse_metrics_addr(text: str) -> tuple[str, int]:
    """``--metrics-addr`` -> (host, port): "HOST:PORT", ":PORT" or "[V6]:PORT"; UsageError otherwise.

    The grammar is the metrics module's (imported lazily: it pulls in prometheus_client).
    """
    from weave_fdp.router.metrics import parse_addr

    try:
        return parse_addr(text)
    except UsageError as exc:
        raise UsageError(f"--metrics-addr {text!r} is not HOST:PORT",
                         fix="use e.g. --metrics-addr 0.0.0.0:6782 or --metrics-addr :6782") from exc


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 1 <= int(p) <= 65535:
        raise UsageError(f"peer address {text!r}: port {p!r} is not 1-65535")
    return int(p)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
