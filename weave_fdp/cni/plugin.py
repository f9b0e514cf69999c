"""``weave-fdp-cni``: the CNI plugin. The runtime runs it in the host's network namespace;
it asks this host's router (its API socket) to attach or detach the container, so
addresses, names and the datapath stay the router's business.

ADD   addresses from an IPAM plugin named in the configuration (delegated per the spec),
      else explicit ones (runtimeConfig.ips, CNI_ARGS IP=), else the router's IPAM;
      the router makes the interface (CNI_IFNAME) on the weave network; the IPAM
      routes go in. Any failure undoes what was done (IPAM released, link removed).
DEL   idempotent: a missing namespace, interface or router is not an error; without
      the router the host end of our veth is removed directly; IPAM is released.
CHECK the interface and prevResult's addresses are there, the router runs, and the
      delegated IPAM plugin's CHECK passes.
VERSION the spec versions supported.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
from typing import Any

from weave_fdp.cni import delegate, spec
from weave_fdp.cni.spec import CniError, Request
from weave_fdp.errors import AlreadyExists, FdpError, NotFound, RouterNotRunning, UsageError
from weave_fdp.router.client import RouterClient

log = logging.getLogger("weave-fdp-cni")

ROUTER_TIMEOUT = 30.0   # seconds: attach probes addresses across the network (~0.3 s) and may allocate
RETRY_ADVICE = "start it (systemctl start weave-fdp, or: weave-fdp launch) and retry"


def _router_error(exc: FdpError) -> CniError:
    """A router's typed error as the CNI error a runtime understands."""
    if isinstance(exc, RouterNotRunning):
        return CniError(spec.E_TRY_AGAIN, "the weave-fdp router is not running on this host", RETRY_ADVICE)
    if isinstance(exc, NotFound):
        return CniError(spec.E_UNKNOWN_CONTAINER, str(exc))
    if isinstance(exc, UsageError):
        return CniError(spec.E_INVALID_CONFIG, str(exc))
    if "did not answer" in str(exc):
        return CniError(spec.E_TRY_AGAIN, f"the weave-fdp router is busy or restarting: {exc}", "retry shortly")
    code = spec.E_ROUTER
    return CniError(code, f"weave-fdp: {exc}", "AlreadyExists" if isinstance(exc, AlreadyExists) else "")


class Plugin:
    def __init__(self, req: Request, env: dict[str, str], client: RouterClient | None = None) -> None:
        self.req, self.env = req, env
        self.client = client or RouterClient(timeout=ROUTER_TIMEOUT)

    def call(self, op: str, **args: Any) -> Any:
        try:
            return self.client.call(op, **args)
        except FdpError as exc:
            raise _router_error(exc) from None

    # ------------------------------------------------------------ ADD
    def add(self) -> dict[str, Any]:
        req = self.req
        if not self.client.running():
            raise CniError(spec.E_TRY_AGAIN, "the weave-fdp router is not running on this host", RETRY_ADVICE)
        if not os.path.exists(req.netns):
            raise CniError(spec.E_UNKNOWN_CONTAINER, f"network namespace {req.netns} does not exist")
        ipam_result = None
        gateways: dict[str, str] = {}
        if req.delegated_ipam:
            data = delegate.run_plugin(req, req.delegated_ipam, "ADD", self.env)
            ipam_result = spec.parse_ipam_result(data)
            addrs = [ip["address"] for ip in ipam_result.ips]
            gateways = {str(ipaddress.ip_interface(ip["address"]).ip): ip["gateway"]
                        for ip in ipam_result.ips if ip.get("gateway")}
        else:
            addrs = spec.requested_addresses(req, self._default_prefix())
        attached = False
        try:
            addrs = spec.delegated_addresses(addrs) if ipam_result else addrs
            res = self.call("attach", target=req.netns, addrs=addrs, ifname=req.ifname, ident=req.container_id,
                            label=req.container_id[:12], multicast_route=True, **self._dns_name())
            attached = True
            routes = ipam_result.routes if ipam_result else []
            if routes:
                self._add_routes(routes)
            dns = ipam_result.dns if ipam_result else {}
            weave_dns = res.get("dns") if isinstance(res.get("dns"), dict) else {}
            if weave_dns.get("nameserver") and not dns:   # weaveDNS answers the container's queries
                domain = (weave_dns.get("name") or "").rstrip(".").partition(".")[2]
                dns = {"nameservers": [weave_dns["nameserver"]], **({"search": [domain]} if domain else {})}
            return spec.add_result(req, host_if=res["ifname"], host_mac=None, container_mac=res.get("mac"),
                                   cidrs=list(res["cidrs"]), gateways=gateways, routes=routes, dns=dns)
        except BaseException:
            self._undo(attached)
            raise

    def _dns_name(self) -> dict[str, str]:
        """The container's name for weaveDNS: K8S_POD_NAME in CNI_ARGS (Podman passes the
        container's name there), when it is a DNS label; else no name."""
        name = self.req.args.get("K8S_POD_NAME", "")
        if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", name):
            return {"hostname": name}
        return {}

    def _default_prefix(self) -> int:
        try:
            rng = (self.call("report").get("ipam") or {}).get("range")
            return ipaddress.ip_network(rng).prefixlen if rng else 12
        except (CniError, ValueError, AttributeError):
            return 12

    def _add_routes(self, routes: list[dict[str, Any]]) -> None:
        from weave_fdp.plumbing import container_link

        try:
            container_link.add_routes(self.req.netns, self.req.ifname,
                                      [(r["dst"], r.get("gw")) for r in routes])
        except FdpError as exc:
            raise CniError(spec.E_ROUTER, f"weave-fdp: {exc}") from None

    def _undo(self, attached: bool) -> None:
        """Roll back an ADD that failed half way: no half-made interface, no leaked address."""
        if attached:
            try:
                self.client.call("detach", target=self.req.netns)
            except FdpError as exc:
                log.warning("rollback: detach failed: %s", exc)
        if self.req.delegated_ipam:
            try:
                delegate.run_plugin(self.req, self.req.delegated_ipam, "DEL", self.env)
            except CniError as exc:
                log.warning("rollback: IPAM release failed: %s", exc.msg)

    # ------------------------------------------------------------ DEL
    def delete(self) -> None:
        req = self.req
        errors: list[CniError] = []
        if req.netns and os.path.exists(req.netns):
            try:
                # its addresses stay the container's for a while: a restart (DEL, then ADD in a
                # new namespace) gets them back
                self.client.call("detach", target=req.netns, grace=True)
            except NotFound:
                pass                      # already gone: DEL is idempotent
            except RouterNotRunning:
                self._detach_without_router()
            except FdpError as exc:
                errors.append(_router_error(exc))
        if req.delegated_ipam:
            try:
                delegate.run_plugin(req, req.delegated_ipam, "DEL", self.env)
            except CniError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _detach_without_router(self) -> None:
        """The router is down: remove the host end of our veth ourselves (its records are
        dropped when it starts again, since the veth is gone)."""
        from weave_fdp.plumbing import container_link

        try:
            container_link.detach(self.req.netns)
        except FdpError as exc:
            raise CniError(spec.E_IO, f"cannot remove the interface of {self.req.netns}: {exc}") from None

    # ------------------------------------------------------------ CHECK
    def check(self) -> None:
        from weave_fdp.plumbing import container_link

        req = self.req
        if not self.client.running():
            raise CniError(spec.E_TRY_AGAIN, "the weave-fdp router is not running on this host", RETRY_ADVICE)
        if not os.path.exists(req.netns):
            raise CniError(spec.E_UNKNOWN_CONTAINER, f"network namespace {req.netns} does not exist")
        try:
            link = container_link.describe(req.netns, ifname=req.ifname)
        except FdpError as exc:
            raise CniError(spec.E_UNKNOWN_CONTAINER, str(exc)) from None
        if link is None:
            raise CniError(spec.E_ROUTER, f"weave-fdp: {req.ifname} in {req.netns} is not on the weave network")
        have = {str(ipaddress.ip_interface(c)) for c in link.cidrs}
        missing = [a for a in spec.prev_addresses(req) if a not in have]
        if missing:
            raise CniError(spec.E_ROUTER, f"weave-fdp: {req.ifname} lacks {', '.join(missing)}",
                           f"it has {', '.join(sorted(have)) or 'no address'}")
        if req.delegated_ipam:
            delegate.run_plugin(req, req.delegated_ipam, "CHECK", self.env)


def run(env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """(exit code, JSON to print) for one invocation; never raises."""
    version = spec.SPEC_VERSION
    try:
        req = spec.parse_request(env, stdin)
        version = req.version if req.version in spec.SUPPORTED_VERSIONS else spec.SPEC_VERSION
        if req.command == "VERSION":
            return 0, spec.version_result(req.version)
        plugin = Plugin(req, env)
        if req.command == "ADD":
            return 0, plugin.add()
        if req.command == "DEL":
            plugin.delete()
        else:
            plugin.check()
        return 0, None
    except CniError as exc:
        return 1, exc.to_json(version)
    except Exception as exc:   # a bug: still the spec's error object, never a traceback on stdout
        log.exception("weave-fdp-cni: internal error")
        return 1, CniError(spec.E_IO, f"weave-fdp-cni internal error: {type(exc).__name__}: {exc}").to_json(version)


def main() -> None:
    """Console entry point: env + stdin in, JSON out, exit 0 or 1."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="weave-fdp-cni: %(message)s")
    try:
        stdin = sys.stdin.buffer.read(spec.MAX_CONFIG + 1)
    except OSError as exc:
        stdin, code = b"", CniError(spec.E_IO, f"cannot read stdin: {exc.strerror}")
        print(json.dumps(code.to_json()))
        sys.exit(1)
    rc, out = run(dict(os.environ), stdin)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    if rc != 0 and out is not None:
        print(f"error: {out.get('msg')}" + (f"; {out['details']}" if out.get("details") else ""), file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
