"""The CNI specification (1.0.0, with the 0.3.x/0.4.0 result forms), as pure data handling.

What the runtime hands a plugin (environment and the network configuration on stdin)
becomes a :class:`Request`; what the plugin answers is a result or an error object,
both JSON on stdout. Nothing here touches the kernel or the router.

Error codes (the spec's well-known ones, then ours from 100):
  1 incompatible CNI version, 2 unsupported field, 3 container unknown or does not exist,
  4 invalid necessary environment variables, 5 I/O failure, 6 failed to decode content,
  7 invalid network config, 11 try again later;
  100 the weave-fdp router refused the request (its message says why).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from weave_fdp.addresses import host_cidr
from weave_fdp.errors import UsageError

SPEC_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")
PLUGIN_TYPE = "weave-fdp-cni"
WEAVE_IPAM = "weave-fdp"          # ipam.type that means "the router's IPAM" (as does no ipam at all)
MAX_CONFIG = 1 << 20              # bytes of stdin we read

E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_ROUTER = 100

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")     # container id and network name (spec)
_ARG_RE = re.compile(r"^[A-Za-z0-9_]+$")


class CniError(Exception):
    """An error the plugin reports as the spec's error object (and a non-zero exit)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str = SPEC_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_tuple(v: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v or "")
    if not m:
        raise CniError(E_INCOMPATIBLE_VERSION, f"cniVersion {v!r} is not a version",
                       f"this plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    return int(m[1]), int(m[2]), int(m[3])


@dataclass
class Request:
    command: str
    config: dict[str, Any]
    raw_config: bytes
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", SPEC_VERSION))

    @property
    def name(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def ipam(self) -> dict[str, Any]:
        ipam = self.config.get("ipam")
        return ipam if isinstance(ipam, dict) else {}

    @property
    def delegated_ipam(self) -> str | None:
        """The IPAM plugin to delegate to, or None for the router's own IPAM."""
        t = self.ipam.get("type")
        return None if t in (None, "", WEAVE_IPAM) else str(t)

    @property
    def prev_result(self) -> dict[str, Any] | None:
        pr = self.config.get("prevResult")
        return pr if isinstance(pr, dict) else None


def parse_cni_args(text: str) -> dict[str, str]:
    """``K1=V1;K2=V2`` -> dict (CNI_ARGS); CniError 4 on a malformed pair."""
    out: dict[str, str] = {}
    for pair in (p for p in (text or "").split(";") if p):
        k, sep, v = pair.partition("=")
        if not sep or not _ARG_RE.match(k):
            raise CniError(E_INVALID_ENV, f"CNI_ARGS: {pair[:60]!r} is not KEY=VALUE",
                           "CNI_ARGS is KEY=VALUE pairs separated by ';'")
        out[k] = v
    return out


def _check_ifname(name: str) -> str:
    if (not name or len(name.encode()) > 15 or name in (".", "..") or "/" in name or ":" in name
            or any(c.isspace() for c in name)):
        raise CniError(E_INVALID_ENV, f"CNI_IFNAME {name[:40]!r} is not a valid interface name",
                       "1-15 characters, not '.' or '..', without '/', ':' or whitespace")
    return name


def parse_request(env: dict[str, str], stdin: bytes) -> Request:
    """The runtime's invocation -> Request; CniError with the spec's code for anything wrong."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(E_INVALID_ENV, f"CNI_COMMAND {command[:20]!r} is not one of {', '.join(COMMANDS)}",
                       "the runtime sets CNI_COMMAND; to run by hand: CNI_COMMAND=VERSION weave-fdp-cni")
    if len(stdin) > MAX_CONFIG:
        raise CniError(E_DECODE, f"network configuration larger than {MAX_CONFIG} bytes")
    try:
        config = json.loads(stdin.decode("utf-8")) if stdin.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(E_DECODE, "network configuration on stdin is not JSON", str(exc)[:200]) from None
    if not isinstance(config, dict):
        raise CniError(E_DECODE, "network configuration on stdin is not a JSON object")
    req = Request(command=command, config=config, raw_config=stdin)
    if "cniVersion" in config and not isinstance(config["cniVersion"], str):
        raise CniError(E_DECODE, "cniVersion is not a string")
    version = req.version
    if command == "VERSION":
        version_tuple(version)   # a malformed one is still an error
        return req
    if version not in SUPPORTED_VERSIONS:
        version_tuple(version)
        raise CniError(E_INCOMPATIBLE_VERSION, f"incompatible CNI version {version}",
                       f"this plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CniError(E_INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, not {version}")
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise CniError(E_INVALID_CONFIG, f"network configuration lacks {key!r}",
                           'e.g. {"cniVersion": "1.0.0", "name": "weave", "type": "weave-fdp-cni"}')
    if not _ID_RE.match(req.name):
        raise CniError(E_INVALID_CONFIG, f"network name {req.name[:60]!r} is not valid",
                       "letters, digits, '_', '.', '-', starting with a letter or digit")
    if "ipam" in config and not isinstance(config["ipam"], dict):
        raise CniError(E_INVALID_CONFIG, "ipam is not an object", 'e.g. "ipam": {"type": "host-local", ...}')
    if req.ipam and not isinstance(req.ipam.get("type", WEAVE_IPAM), str):
        raise CniError(E_INVALID_CONFIG, "ipam.type is not a string")
    if "dns" in config and not isinstance(config["dns"], dict):
        raise CniError(E_INVALID_CONFIG, "dns is not an object")
    if "prevResult" in config and not isinstance(config["prevResult"], dict):
        raise CniError(E_INVALID_CONFIG, "prevResult is not an object")
    req.container_id = env.get("CNI_CONTAINERID", "")
    if not req.container_id or not _ID_RE.match(req.container_id):
        raise CniError(E_INVALID_ENV, f"CNI_CONTAINERID {req.container_id[:80]!r} is missing or not valid",
                       "letters, digits, '_', '.', '-', starting with a letter or digit")
    req.ifname = _check_ifname(env.get("CNI_IFNAME", ""))
    req.netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not req.netns:
        raise CniError(E_INVALID_ENV, f"CNI_NETNS is required for {command}",
                       "the path of the container's network namespace, e.g. /run/netns/NAME")
    if req.netns and not req.netns.startswith("/"):
        raise CniError(E_INVALID_ENV, f"CNI_NETNS {req.netns[:80]!r} is not an absolute path")
    req.args = parse_cni_args(env.get("CNI_ARGS", ""))
    req.path = [p for p in env.get("CNI_PATH", "").split(":") if p]
    if command == "CHECK" and req.prev_result is None:
        raise CniError(E_INVALID_CONFIG, "CHECK needs prevResult in the network configuration",
                       "the runtime passes the result of the last ADD")
    return req


def requested_addresses(req: Request, default_prefix: int) -> list[str]:
    """Explicit addresses: ``runtimeConfig.ips`` (capability "ips") and CNI_ARGS ``IP=``;
    an address without a prefix gets ``default_prefix``. CniError 7 on a bad one."""
    rc = req.config.get("runtimeConfig")
    ips: list[Any] = []
    if isinstance(rc, dict) and rc.get("ips") is not None:
        if not isinstance(rc["ips"], list):
            raise CniError(E_INVALID_CONFIG, "runtimeConfig.ips is not a list")
        ips += rc["ips"]
    if req.args.get("IP"):
        ips += req.args["IP"].split(",")
    try:
        return [host_cidr(str(ip).strip(), what="requested address", default_prefix=default_prefix) for ip in ips]
    except UsageError as exc:
        raise CniError(E_INVALID_CONFIG, exc.message, exc.fix or "") from None


def delegated_addresses(addrs: list[str]) -> list[str]:
    """The addresses a delegated IPAM plugin returned, checked by the rules of every attach
    (an IPv6 range, a network address: CniError 7 naming the IPAM plugin's configuration)."""
    try:
        return [host_cidr(a, what="address from the IPAM plugin") for a in addrs]
    except UsageError as exc:
        raise CniError(E_INVALID_CONFIG, f"{exc.message} (weave-fdp carries IPv4 host addresses)",
                       "configure the IPAM plugin for an IPv4 range") from None


@dataclass
class IpamResult:
    ips: list[dict[str, Any]]        # {"address": CIDR, "gateway": IP?}
    routes: list[dict[str, Any]]     # {"dst": CIDR, "gw": IP?}
    dns: dict[str, Any]


def parse_ipam_result(data: Any) -> IpamResult:
    """An IPAM plugin's result (any supported version) -> IpamResult; CniError 6 when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("ips", []), list):
        raise CniError(E_DECODE, "the IPAM plugin's result is not a CNI result")
    ips, routes = [], []
    for ip in data.get("ips", []):
        try:
            iface = ipaddress.ip_interface(ip["address"])
            gw = str(ipaddress.ip_address(ip["gateway"])) if ip.get("gateway") else None
        except (KeyError, TypeError, ValueError):
            raise CniError(E_DECODE, f"the IPAM plugin returned a bad address: {str(ip)[:80]}") from None
        ips.append({"address": str(iface), **({"gateway": gw} if gw else {})})
    for r in data.get("routes", []) or []:
        try:
            dst = str(ipaddress.ip_network(r["dst"], strict=False))
            gw = str(ipaddress.ip_address(r["gw"])) if r.get("gw") else None
        except (KeyError, TypeError, ValueError):
            raise CniError(E_DECODE, f"the IPAM plugin returned a bad route: {str(r)[:80]}") from None
        routes.append({"dst": dst, **({"gw": gw} if gw else {})})
    dns = data.get("dns") if isinstance(data.get("dns"), dict) else {}
    return IpamResult(ips, routes, dns)


def add_result(req: Request, *, host_if: str, host_mac: str | None, container_mac: str | None,
               cidrs: list[str], gateways: dict[str, str] | None = None,
               routes: list[dict[str, Any]] | None = None, dns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ADD result in the form of the requested cniVersion (0.3.x/0.4.0 add ips[].version)."""
    old = version_tuple(req.version) < (1, 0, 0)
    gateways = gateways or {}
    ips = []
    for cidr in cidrs:
        ip: dict[str, Any] = {"address": cidr, "interface": 1}
        gw = gateways.get(str(ipaddress.ip_interface(cidr).ip))
        if gw:
            ip["gateway"] = gw
        if old:
            ip["version"] = str(ipaddress.ip_interface(cidr).version)
        ips.append(ip)
    cfg_dns = req.config.get("dns") if isinstance(req.config.get("dns"), dict) else {}
    out: dict[str, Any] = {
        "cniVersion": req.version,
        "interfaces": [{"name": host_if, **({"mac": host_mac} if host_mac else {})},
                       {"name": req.ifname, **({"mac": container_mac} if container_mac else {}),
                        "sandbox": req.netns}],
        "ips": ips,
    }
    if routes:
        out["routes"] = routes
    merged_dns = {**(dns or {}), **cfg_dns}
    if merged_dns:
        out["dns"] = merged_dns
    return out


def prev_addresses(req: Request) -> list[str]:
    """The container addresses a prevResult lists (for CHECK)."""
    pr = req.prev_result or {}
    out = []
    for ip in pr.get("ips", []) if isinstance(pr.get("ips"), list) else []:
        if isinstance(ip, dict) and isinstance(ip.get("address"), str):
            try:
                out.append(str(ipaddress.ip_interface(ip["address"])))
            except ValueError:
                raise CniError(E_DECODE, f"prevResult has a bad address {ip['address'][:60]!r}") from None
    return out


def version_result(req_version: str) -> dict[str, Any]:
    return {"cniVersion": req_version if req_version in SUPPORTED_VERSIONS else SPEC_VERSION,
            "supportedVersions": list(SUPPORTED_VERSIONS)}
