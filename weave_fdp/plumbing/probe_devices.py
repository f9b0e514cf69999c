"""Kernel calls behind the probe's device checks: make a throw-away device, use it, delete it.

Every function here works in the *current* network namespace. The probe calls all but
``xdp_native_on`` from a child process that first moved into a fresh anonymous namespace
(``weave_fdp.probe.netns_child``), so even a crash leaves nothing behind; ``xdp_native_on``
(``probe --dev``) touches the named interface only to attach a pass-all program and detach it.
Each returns an ``Outcome``: ok True/False, or None when it could not tell, and a detail.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
TC_H_CLSACT_INGRESS = "ffff:fff2"
ETH_P_ALL = 0x0003
ETH_P_PROBE = 0x88B5  # IEEE "local experimental" ethertype: nobody else consumes it


@dataclass(frozen=True)
class Outcome:
    """What one device check found."""

    ok: bool | None
    detail: str


def _nl_reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        text = os.strerror(exc.code)
        extack = str(exc.args[1]) if len(exc.args) > 1 else ""
        return f"{text}: {extack}" if extack and extack != text else text
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _link(ipr: IPRoute, ifname: str, kind: str, **kwargs: object) -> Iterator[int]:
    """Create a link, yield its index, delete it (tolerating only 'already gone')."""
    ipr.link("add", ifname=ifname, kind=kind, **kwargs)
    index = ipr.link_lookup(ifname=ifname)[0]
    try:
        yield index
    finally:
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


@contextmanager
def veth_up(ipr: IPRoute, name: str) -> Iterator[tuple[int, int]]:
    """A veth pair ``name``a/``name``b, both up; yields their indexes."""
    with _link(ipr, f"{name}a", "veth", peer=f"{name}b") as a:
        b = ipr.link_lookup(ifname=f"{name}b")[0]
        ipr.link("set", index=a, state="up")
        ipr.link("set", index=b, state="up")
        yield a, b


@contextmanager
def scratch_veth(name: str) -> Iterator[tuple[int, int]]:
    """A veth pair ``name``a/``name``b of this namespace for a check, up; removed after."""
    with IPRoute() as ipr, veth_up(ipr, name) as indexes:
        yield indexes


def clsact_bpf(prog_fd: int) -> Outcome:
    """Add a clsact qdisc to a veth and attach ``prog_fd`` at ingress (direct-action).

    A veth, not a dummy: kernels built without CONFIG_DUMMY are common (this one is).
    """
    try:
        with IPRoute() as ipr, veth_up(ipr, "fdpp-t") as (index, _b):
            ipr.tc("add", "clsact", index)
            ipr.tc("add-filter", "bpf", index, ":1", fd=prog_fd, name="fdp_probe",
                   parent=TC_H_CLSACT_INGRESS, classid=1, direct_action=True)
            filters = ipr.get_filters(index, parent=TC_H_CLSACT_INGRESS)
            if not any(f.get_attr("TCA_KIND") == "bpf" and f.get_attr("TCA_OPTIONS") for f in filters):
                return Outcome(False, "clsact added but the bpf filter did not show up")
            ipr.tc("del", "clsact", index)
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))
    return Outcome(True, "clsact qdisc + direct-action bpf filter at ingress")


def vxlan_external(port: int) -> Outcome:
    """Create a collect-metadata ('external') VXLAN device on ``port``, bring it up, read it back."""
    try:
        with IPRoute() as ipr, _link(ipr, "fdpp-vx", "vxlan", vxlan_collect_metadata=1,
                                     vxlan_port=port) as index:
            ipr.link("set", index=index, state="up")
            data = ipr.get_links(index)[0].get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
            got_md = data.get("IFLA_VXLAN_COLLECT_METADATA") if data else None
            got_port = data.get("IFLA_VXLAN_PORT") if data else None
            if not got_md or got_port != port:
                return Outcome(False, f"device reads back collect_metadata={got_md} port={got_port}")
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))
    return Outcome(True, f"external, dstport {port}, up")


def _xdp_state(ipr: IPRoute, index: int) -> tuple[str | None, int | None]:
    xdp = ipr.get_links(index)[0].get("IFLA_XDP")
    if not xdp:
        return None, None
    return xdp.get_attr("IFLA_XDP_ATTACHED"), xdp.get_attr("IFLA_XDP_PROG_ID")


def _xdp_attach_detach(ipr: IPRoute, index: int, prog_fd: int) -> Outcome:
    """Attach ``prog_fd`` in driver mode (never replacing a program), check, detach exactly it."""
    ipr.link("set", index=index, xdp={"attrs": [
        ("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)]})
    try:
        mode, prog_id = _xdp_state(ipr, index)
    finally:
        try:  # detach only our program, even if someone raced us
            ipr.link("set", index=index, xdp={"attrs": [
                ("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE),
                ("IFLA_XDP_EXPECTED_FD", prog_fd)]})
        except NetlinkError:  # kernels before 5.7 lack REPLACE
            ipr.link("set", index=index, xdp={"attrs": [
                ("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
    if mode != "xdp":
        return Outcome(False, f"attached, but the kernel reports mode {mode!r}, not native")
    if _xdp_state(ipr, index)[0] is not None:
        return Outcome(False, "native XDP attached but could not be detached")
    return Outcome(True, f"native (driver) mode attach + detach ok (prog id {prog_id})")


def xdp_native_veth(prog_fd: int) -> Outcome:
    """Attach ``prog_fd`` (an XDP program) in native mode to a throw-away veth."""
    try:
        with IPRoute() as ipr, veth_up(ipr, "fdpp-x") as (a, _b):
            return _xdp_attach_detach(ipr, a, prog_fd)
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))


def xdp_native_on(ifname: str, prog_fd: int) -> Outcome:
    """Can ``ifname`` (current namespace) run XDP natively? Leaves nothing attached.

    An interface that already has an XDP program is not touched: its mode is reported instead.
    """
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return Outcome(False, f"no interface {ifname!r} in this network namespace")
            index = found[0]
            mode, prog_id = _xdp_state(ipr, index)
            if mode == "xdp":
                return Outcome(True, f"a native XDP program (id {prog_id}) is already attached; left as is")
            if mode is not None:
                return Outcome(None, f"an XDP program (id {prog_id}, mode {mode}) is attached; "
                                     "not replaced, so native support was not tested")
            driver = _driver(ifname)
            outcome = _xdp_attach_detach(ipr, index, prog_fd)
            return Outcome(outcome.ok, f"{outcome.detail}; driver {driver}" if driver else outcome.detail)
    except Exception as exc:
        driver = _driver(ifname)
        why = _nl_reason(exc)
        return Outcome(False, f"{why}; driver {driver}" if driver else why)


def _driver(ifname: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/device/driver"))
    except OSError:
        return None


def big_tcp(size: int = 0x40000) -> Outcome:
    """Let a veth pass IPv4 GSO super-frames of ``size`` bytes (over 64 KiB) and read it back."""
    from weave_fdp.plumbing import links  # noqa: F401  (names the attribute for pyroute2)

    try:
        with IPRoute() as ipr, veth_up(ipr, "fdpp-g") as (a, _b):
            ipr.link("set", index=a, IFLA_GSO_IPV4_MAX_SIZE=size)
            got = ipr.get_links(a)[0].get_attr("IFLA_GSO_IPV4_MAX_SIZE")
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))
    if got != size:
        return Outcome(False, "no gso_ipv4_max_size on this kernel" if got is None else
                       f"gso_ipv4_max_size reads {got}, not {size}")
    return Outcome(True, f"gso_ipv4_max_size {size}: sleeve-only hosts carry IPv4 super-frames over 64 KiB")


def bridge() -> Outcome:
    """Create a bridge, enslave one end of a veth pair to it, bring it up, delete both."""
    try:
        with IPRoute() as ipr, _link(ipr, "fdpp-br", "bridge") as br, veth_up(ipr, "fdpp-b") as (a, _b):
            ipr.link("set", index=a, master=br)
            ipr.link("set", index=br, state="up")
            if ipr.get_links(a)[0].get("IFLA_MASTER") != br:
                return Outcome(False, "veth did not join the bridge")
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))
    return Outcome(True, "bridge with a veth port, up")


def af_packet_roundtrip(timeout: float = 1.0) -> Outcome:
    """Inject a frame with AF_PACKET on one end of a veth pair and capture it on the other."""
    marker = os.urandom(8)
    try:
        with IPRoute() as ipr, veth_up(ipr, "fdpp-p") as (_a, _b), \
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as rx, \
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as tx:
            rx.bind(("fdpp-pb", ETH_P_ALL))
            tx.bind(("fdpp-pa", ETH_P_ALL))
            frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETH_P_PROBE.to_bytes(2, "big")
            tx.send(frame + marker + bytes(46 - len(marker)))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([rx], [], [], left)[0]:
                    break
                if marker in rx.recv(2048):  # other frames (IPv6 ND) may arrive first
                    return Outcome(True, "frame injected on one veth end, captured on the other")
            return Outcome(False, f"injected frame not captured within {timeout:.1f} s")
    except PermissionError:
        return Outcome(False, "AF_PACKET needs CAP_NET_RAW: run as root")
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))


def af_packet_open() -> Outcome:
    """Only open an AF_PACKET socket (used when no throw-away namespace could be made)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        return Outcome(False, "AF_PACKET needs CAP_NET_RAW: run as root")
    except OSError as exc:
        return Outcome(False, f"AF_PACKET socket: {exc.strerror}")
    return Outcome(True, "AF_PACKET socket opens (capture/inject not tested without root)")


def udp_roundtrip(send: bool = True) -> Outcome:
    """Bring loopback up and send a UDP datagram to ourselves (``send=False``: only bind)."""
    try:
        if send:
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            if not send:
                return Outcome(True, "UDP socket binds (datagram not sent without root)")
            sock.settimeout(1.0)
            sock.sendto(b"fdp-probe", sock.getsockname())
            if sock.recv(64) != b"fdp-probe":
                return Outcome(False, "datagram to self came back altered")
    except Exception as exc:
        return Outcome(False, _nl_reason(exc))
    return Outcome(True, "datagram sent to self and received")


def xfrm_esp() -> Outcome:
    """Add (and flush) an ESP tunnel-mode state with AEAD rfc4106(gcm(aes)) via iproute2."""
    ip = shutil.which("ip")
    if ip is None:
        return Outcome(None, "iproute2's ip not found (apt-get install iproute2)")
    add = [ip, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
           "spi", "0x100", "reqid", "1", "mode", "tunnel", "aead", "rfc4106(gcm(aes))",
           "0x" + "11" * 20, "128"]
    try:
        res = subprocess.run(add, capture_output=True, text=True, timeout=3)
        subprocess.run([ip, "xfrm", "state", "flush"], capture_output=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(None, f"ip xfrm: {exc}")
    if res.returncode == 0:
        return Outcome(True, "ESP state with rfc4106(gcm(aes)) added")
    why = (res.stderr.strip().splitlines() or ["ip xfrm state add failed"])[-1]
    has_xfrm = os.path.exists("/proc/net/xfrm_stat")
    return Outcome(False, f"{'XFRM present, but ' if has_xfrm else ''}{why.removeprefix('Error: ')}")
