"""A multi-host lab on one machine, made of network namespaces.

``Lab`` is put together from one part per job: names and addresses
(``names.py``), building and removing (``build.py``), running commands, routers
and containers (``run.py``), underlay faults (``faults.py``) and reachability
(``reach.py``); the state file is ``state.py``, the topologies ``topology.py``.

Layout (names are part of the contract, see docs/ARCHITECTURE.md):

* ``<prefix>-ul``: the underlay namespace with bridge ``ul0``; port ``h<i>`` per host;
  nftables (``bridge`` family) there enforces the topology, cuts and UDP blocks.
* ``<prefix>-h<i>``: host i (from 1), ``eth0`` = 192.0.2.<i>/24, MTU 1500, ``lo`` up.
* ``<prefix>-h<i>-c<j>``: container j of host i, only ``lo`` up (the router attaches it).

Nothing is created in the initial namespace and nothing is routed to the uplink.
The lab's state is saved to ``/run/weave-fdp/lab/<prefix>.json`` so another process
can find it with :meth:`Lab.load`.

Example::

    with Lab(prefix="t1a2b3", hosts=3, topology="line") as lab:
        lab.up()
        assert lab.reachability()[(1, 3)] is False   # a line: h1 and h3 are not adjacent
        lab.exec(1, ["ping", "-c1", lab.host_ip(2)])
"""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import Any

from weave_fdp.errors import NotFound, UsageError
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import topology as topo
from weave_fdp.lab.build import (ProgressFn, check_environment, lab_namespaces, teardown,  # noqa: F401 (the lab's API)
                                 weave_command)
from weave_fdp.lab.faults import LabFaults
from weave_fdp.lab.names import (CONTAINER_PREFIXLEN, DEFAULT_PREFIX, UNDERLAY_NET, check_prefix,  # noqa: F401
                                 netns_pattern)
from weave_fdp.lab.reach import LabReach
from weave_fdp.lab.run import LabRun
from weave_fdp.plumbing.netns import netns_exists


class Lab(LabRun, LabFaults, LabReach):
    """Several hosts (network namespaces) joined by an underlay bridge with a topology."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, hosts: int = 3, topology: str = "full",
                 containers: int = 0, *, routers: bool = False, mtu: int = 1500) -> None:
        self.prefix = check_prefix(prefix)
        self.hosts = topo.check_hosts(hosts)
        self.topology = topo.check_topology(topology)
        topo.check_containers(containers)
        if not 576 <= mtu <= 9000:
            raise UsageError(f"underlay MTU {mtu} out of range", fix="use 576..9000")
        self.routers = routers
        self.state = lab_state.LabState(prefix=prefix, hosts=hosts, topology=topology, mtu=mtu,
                                        containers={i: containers for i in range(1, hosts + 1)})
        self._adj = topo.adjacency(topology, hosts)
        self._procs: list[subprocess.Popen[Any]] = []

    @property
    def mtu(self) -> int:
        return self.state.mtu

    @classmethod
    def load(cls, prefix: str = DEFAULT_PREFIX) -> Lab:
        """The lab ``prefix`` as saved by the process that built it (``NotFound`` if none)."""
        saved = lab_state.load(check_prefix(prefix))
        if saved is None:
            known = lab_state.known_prefixes()
            raise NotFound(f"no lab with prefix {prefix!r}"
                           + (f" (labs: {', '.join(known)})" if known else ""),
                           fix="start one with `weave-fdp lab up`" if not known else "pass --prefix")
        lab = cls(prefix=saved.prefix, hosts=saved.hosts, topology=saved.topology, mtu=saved.mtu)
        lab.state = saved
        lab.routers = saved.routers
        return lab

    def is_up(self) -> bool:
        """True when every namespace of the lab exists."""
        return all(netns_exists(ns) for ns in self.namespaces())

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.down()

    def describe(self) -> dict[str, Any]:
        """The lab as plain data (for ``lab status --json``)."""
        hosts = []
        for i in range(1, self.hosts + 1):
            ns = self.host_ns(i)
            hosts.append({
                "host": i,
                "name": f"h{i}",
                "netns": ns,
                "ip": self.host_ip(i),
                "present": netns_exists(ns),
                "neighbours": [f"h{n}" for n in self.neighbours(i)],
                "containers": [{"name": f"h{i}-c{j}", "netns": self.container_ns(i, j),
                                "present": netns_exists(self.container_ns(i, j))}
                               for j in range(1, self.containers(i) + 1)],
            })
        return {
            "prefix": self.prefix,
            "topology": self.topology,
            "mtu": self.mtu,
            "underlay_netns": self.ul_ns,
            "routers": self.state.routers,
            "cuts": [f"h{a}-h{b}" for a, b in self.state.cuts],
            "udp_blocks": [f"h{a}-h{b}:{p}" for a, b, p in self.state.udp_blocks],
            "hosts": hosts,
        }
