"""The paths under test, each built in a lab of its own (two hosts, one container each).

Every path gives the runner three things: the namespace the client runs in, the
namespace the server runs in, and the address the client dials. Each lives in
its own lab (its own namespaces, devices and processes), so the paths cannot
interfere; they are all built first and torn down together at the end.

* ``underlay``  the two host namespaces straight on the lab underlay (veth, bridge
  ``ul0``, veth at MTU 1500): no overlay at all, the limit.
* ``vxlan``     what Flannel's vxlan backend sets up on each host: bridge ``cni0``
  (10.33.<i>.1/24, MTU 1450) with the container's veth, a VXLAN device
  ``flannel.1`` (VNI 1, UDP 8472, ``nolearning``, MTU 1450, 10.33.<i>.0/32),
  a route ``10.33.<k>.0/24 via 10.33.<k>.0 dev flannel.1 onlink`` to the other
  host's pod subnet, a permanent neighbour entry for that gateway with the other
  ``flannel.1``'s MAC and a static FDB entry sending that MAC to the other host.
  The host routes between the bridge and the VXLAN device (ip_forward on).
  Flannel's iptables rules (masquerade, FORWARD accept) are left out: no rules
  means no netfilter cost, which only flatters this path.
* ``fastdp``    the project's datapath exactly as the router sets it up
  (``HostDatapath``: bridge ``weave``, collect_md ``vxlan-6784``, tc programs,
  ``ethwe`` at underlay − 50) with a static two-host plan instead of a mesh.
* ``sleeve`` / ``sleeve_enc``  the standalone sleeve forwarder on each host
  (``python -m weave_fdp.datapath.sleeve.run``), plain or with a password;
  containers get the MTU the sleeve reports for the path (what PMTU discovery
  would settle on).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from weave_fdp.errors import FdpError
from weave_fdp.lab.lab import Lab
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import run_in_netns, stop_process

log = logging.getLogger(__name__)

HOSTS = (1, 2)
FLANNEL_PORT = 8472        # Flannel's default VXLAN port (Linux's legacy default)
FLANNEL_MTU = 1450         # underlay 1500 − 50, as Flannel computes it
SLEEVE_PASSWORD = "weave-fdp bench"


class BenchPath:
    """One path under test: a lab of two hosts, a client side and a server side."""

    key = ""

    def __init__(self, prefix: str) -> None:
        self.lab = Lab(prefix, hosts=2, topology="full")
        self.info: dict[str, Any] = {}

    # what the runner needs
    @property
    def client_ns(self) -> str:
        return self.lab.container_ns(1, 1)

    @property
    def server_ns(self) -> str:
        return self.lab.container_ns(2, 1)

    @property
    def server_ip(self) -> str:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Processes of the path itself (forwarders) whose CPU time the transfer costs."""
        return []

    def build(self) -> None:
        self.lab.up()
        self._build()

    def _build(self) -> None:
        """Everything beyond the bare lab (hosts on the underlay)."""

    def close(self) -> None:
        """Tear everything down (idempotent; tolerates a half-built path)."""
        self.lab.down()


class UnderlayPath(BenchPath):
    """Host namespace to host namespace on the lab underlay: the limit."""

    key = "underlay"

    @property
    def client_ns(self) -> str:
        return self.lab.host_ns(1)

    @property
    def server_ns(self) -> str:
        return self.lab.host_ns(2)

    @property
    def server_ip(self) -> str:
        return self.lab.host_ip(2)

    def _build(self) -> None:
        self.info["mtu"] = self.lab.mtu


class FlannelVxlanPath(BenchPath):
    """The kernel's VXLAN device and a bridge, routed as Flannel's vxlan backend does."""

    key = "vxlan"

    @staticmethod
    def pod_ip(i: int) -> str:
        return f"10.33.{i}.2"

    @property
    def server_ip(self) -> str:
        return self.pod_ip(2)

    def _ip(self, i: int, *args: str) -> str:
        return self.lab.exec(i, ["ip", *args]).stdout

    def _build(self) -> None:
        macs = {}
        for i in HOSTS:
            ns = self.lab.host_ns(i)
            run_in_netns(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            self._ip(i, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", self.lab.host_ip(i),
                     "dev", "eth0", "dstport", str(FLANNEL_PORT), "nolearning")
            self._ip(i, "link", "set", "flannel.1", "mtu", str(FLANNEL_MTU), "up")
            self._ip(i, "addr", "add", f"10.33.{i}.0/32", "dev", "flannel.1")
            macs[i] = links.get_link("flannel.1", ns).mac
            links.create_bridge("cni0", netns=ns, mtu=FLANNEL_MTU)
            links.add_address("cni0", f"10.33.{i}.1/24", ns)
            self.lab.add_container(i)
            cns = self.lab.container_ns(i, 1)
            links.create_veth("vethc1", "eth0", netns=ns, peer_netns=cns, mtu=FLANNEL_MTU)
            links.set_master("vethc1", "cni0", ns)
            links.add_address("eth0", f"{self.pod_ip(i)}/24", cns)
            run_in_netns(cns, ["ip", "route", "add", "default", "via", f"10.33.{i}.1"])
        for i in HOSTS:
            k = 3 - i
            self._ip(i, "route", "add", f"10.33.{k}.0/24", "via", f"10.33.{k}.0", "dev", "flannel.1", "onlink")
            self._ip(i, "neigh", "replace", f"10.33.{k}.0", "lladdr", macs[k], "dev", "flannel.1", "nud", "permanent")
            self._ip(i, "link", "set", "dev", "flannel.1", "up")
            run_in_netns(self.lab.host_ns(i), ["bridge", "fdb", "append", macs[k], "dev", "flannel.1",
                                               "dst", self.lab.host_ip(k), "self", "permanent"])
        self.info["mtu"] = FLANNEL_MTU
        self.info["vxlan_port"] = FLANNEL_PORT


class FastdpPath(BenchPath):
    """The project's fast datapath, set up by ``HostDatapath`` from a static plan."""

    key = "fastdp"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.hosts: dict[int, Any] = {}

    @property
    def server_ip(self) -> str:
        return self.lab.container_ip(2, 1)

    def _build(self) -> None:
        # Imported here: it loads bcc, which the other paths do not need.
        from weave_fdp.datapath.fastdp.host import HostDatapath, MeshInputs

        names = {i: f"h{i}" for i in HOSTS}
        for i in HOSTS:
            k = 3 - i
            hd = HostDatapath(netns=self.lab.host_ns(i))  # the router passes no underlay: same derivation
            self.hosts[i] = hd
            hd.start()
            hd.set_mesh(MeshInputs(local=names[i], short_ids={names[h]: h for h in HOSTS},
                                   unicast={names[k]: names[k]},
                                   broadcast={names[i]: [names[k]], names[k]: []},
                                   hop_ips={names[k]: self.lab.host_ip(k)}, modes={names[k]: "fastdp"}))
            self.lab.add_container(i)
            hd.attach(f"/run/netns/{self.lab.container_ns(i, 1)}", [self.lab.container_cidr(i, 1)])
        self.info["mtu"] = self.hosts[1].mtu

    def close(self) -> None:
        for hd in self.hosts.values():
            try:
                hd.stop()
            except Exception:  # best effort: the namespaces go next and take the programs with them
                log.exception("fastdp: cannot release the programs")
        self.hosts.clear()
        super().close()


class SleevePath(BenchPath):
    """The standalone sleeve forwarder on both hosts, plain or encrypted."""

    key = "sleeve"

    def __init__(self, prefix: str, password: str | None = None, pythonpath: str | None = None,
                 big_frames: bool | None = None) -> None:
        super().__init__(prefix)
        self.password = password
        self.key = "sleeve_enc" if password else "sleeve"
        self.pythonpath = pythonpath      # run the forwarders from this source tree (an A/B baseline)
        # IPv4 super-frames over 64 KiB, as a sleeve-only router sizes its ports where the kernel
        # has BIG TCP (datapath.bridge_ports); None: so where it can, except for a baseline tree
        # (which may not take them)
        self.big_frames = (pythonpath is None and links.big_tcp_supported()) if big_frames is None else big_frames
        self.tmp = Path(tempfile.mkdtemp(prefix=f"weave-fdp-bench-{prefix}-"))
        self.procs: dict[int, subprocess.Popen[Any]] = {}

    @property
    def server_ip(self) -> str:
        return self.lab.container_ip(2, 1)

    @staticmethod
    def peer_name(i: int) -> str:
        return f"7e:00:00:00:be:{i:02x}"

    def _build(self) -> None:
        self._plumb()
        for i in HOSTS:
            cfg = {"local": self.peer_name(i), "ifname": "vethwe-pcap",
                   "peers": {self.peer_name(k): self.lab.host_ip(k) for k in HOSTS},
                   "password": self.password, "status_file": str(self.tmp / f"status-h{i}.json"),
                   "big_frames": self.big_frames}
            path = self.tmp / f"sleeve-h{i}.json"
            path.write_text(json.dumps(cfg))
            env = {**os.environ, "PYTHONPATH": self.pythonpath} if self.pythonpath else None
            with open(self.tmp / f"sleeve-h{i}.log", "wb") as out:
                # ``-m`` puts the working directory first on sys.path, before PYTHONPATH: a baseline
                # tree runs from its own directory, or the current tree's code would shadow it
                self.procs[i] = self.lab.popen(i, [sys.executable, "-m", "weave_fdp.datapath.sleeve.run",
                                                   str(path)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                               cwd=self.pythonpath)
        self._finish(self._wait_up())
        self.info["encrypted"] = bool(self.password)

    def _plumb(self) -> None:
        """Each host's sleeve port (bridge ``weave``, ``vethwe-bridge``/``vethwe-pcap``) and container."""
        from weave_fdp.datapath.sleeve.sizing import PORT_GSO_MAX
        from weave_fdp.plumbing.sleeve_port import ensure_sleeve_port

        for i in HOSTS:
            ns = self.lab.host_ns(i)
            ensure_sleeve_port(ns, gso_ipv4_max_size=PORT_GSO_MAX if self.big_frames else None)
            self.lab.add_container(i)
            cns = self.lab.container_ns(i, 1)
            links.create_veth("vethwepl1", "ethwe", netns=ns, peer_netns=cns)
            links.set_master("vethwepl1", "weave", ns)
            links.add_address("ethwe", f"{self.lab.container_ip(i, 1)}/12", cns)

    def _finish(self, mtu: int) -> None:
        """Containers' MTU and ``gso_max_size`` as the router's attach sets them for the sleeve."""
        from weave_fdp.datapath.sleeve.sizing import big_super_frame, container_gso_max_size

        for i in HOSTS:
            # What PMTU discovery settles on: no ICMP round trips during the measurements.
            links.set_mtu("ethwe", mtu, self.lab.container_ns(i, 1))
            links.set_mtu("vethwepl1", mtu, self.lab.host_ns(i))
            # What the router's attach sets (best effort there too): super-frames that fit one UDP GSO train.
            try:
                links.set_gso_max_size("ethwe", container_gso_max_size(self.lab.mtu), self.lab.container_ns(i, 1))
            except FdpError as exc:
                log.warning("sleeve path: %s (super-frames may take two trains)", exc)
            if self.big_frames:     # both ends, as container_link.attach sets them
                links.set_gso_ipv4_max_size("ethwe", big_super_frame(self.lab.mtu), self.lab.container_ns(i, 1))
                links.set_gso_ipv4_max_size("vethwepl1", big_super_frame(self.lab.mtu), self.lab.host_ns(i))
        self.info["mtu"] = mtu
        self.info["big_frames"] = self.big_frames

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def status(self, i: int) -> dict[str, Any]:
        return json.loads((self.tmp / f"status-h{i}.json").read_text())

    def _wait_up(self, timeout: float = 30) -> int:
        """Wait until both forwarders see their peer up with PMTU found; the sleeve MTU."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in self.procs.items():
                if p.poll() is not None:
                    raise FdpError(f"the sleeve forwarder of {self.lab.host_ns(i)} exited {p.returncode}",
                                   fix=f"see {self.tmp / f'sleeve-h{i}.log'}")
            try:
                peers = [self.status(i)["peers"] for i in HOSTS]
                if all(p and p[0]["up"] and p[0]["pmtu_discovered"] for p in peers):
                    return min(int(p[0]["mtu"]) for p in peers)
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise FdpError(f"the sleeve peers of lab {self.lab.prefix} did not come up within {timeout:g} s",
                       fix=f"see the logs in {self.tmp}")

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            stop_process(p, 5)
        self.procs.clear()
        super().close()
        if not os.environ.get("WEAVE_FDP_BENCH_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def make_paths(keys: list[str], prefix: str) -> list[BenchPath]:
    """The paths ``keys`` (see results.PATHS), each with a lab prefix of its own."""
    makers = {
        "underlay": lambda: UnderlayPath(prefix + "u"),
        "vxlan": lambda: FlannelVxlanPath(prefix + "v"),
        "fastdp": lambda: FastdpPath(prefix + "f"),
        "sleeve": lambda: SleevePath(prefix + "s"),
        "sleeve_enc": lambda: SleevePath(prefix + "e", password=SLEEVE_PASSWORD),
    }
    return [makers[k]() for k in keys]
