"""Names in a lab: namespaces, addresses and targets of hosts and containers (pure).

Layout (names are part of the contract, see docs/ARCHITECTURE.md): ``<prefix>-ul``
the underlay, ``<prefix>-h<i>`` host i with ``eth0`` = 192.0.2.<i>/24,
``<prefix>-h<i>-c<j>`` container j of host i (10.32.<i>.<j>/12).
"""

from __future__ import annotations

import re

from weave_fdp.errors import NotFound, UsageError
from weave_fdp.lab import state as lab_state
from weave_fdp.lab import topology as topo

DEFAULT_PREFIX = "wfdp"
UNDERLAY_NET = "192.0.2"
CONTAINER_PREFIXLEN = 12  # containers get 10.32.<host>.<j>/12 (Weave's default range)
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}$", re.IGNORECASE)


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if usable in namespace names, else raise ``UsageError``."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise UsageError(f"bad lab prefix {prefix!r}",
                         fix="use 1-16 letters, digits or '_' (no '-'), e.g. --prefix lab2")
    return prefix


def netns_pattern(prefix: str) -> re.Pattern[str]:
    """Matches exactly the namespaces of lab ``prefix`` (and no other lab's)."""
    return re.compile(rf"{re.escape(prefix)}-(ul|h\d+(-c\d+)?)")


class LabNames:
    """The names and addresses of one lab's hosts and containers (a part of ``Lab``)."""

    prefix: str
    hosts: int
    topology: str
    state: lab_state.LabState
    _adj: dict[int, list[int]]

    @property
    def ul_ns(self) -> str:
        """The underlay namespace (bridge ``ul0``)."""
        return f"{self.prefix}-ul"

    def _check_host(self, i: int) -> int:
        if not isinstance(i, int) or not 1 <= i <= self.hosts:
            raise NotFound(f"lab {self.prefix} has no host {i!r}", fix=f"hosts are 1..{self.hosts}")
        return i

    def host_ns(self, i: int) -> str:
        """Namespace of host ``i`` (from 1): ``<prefix>-h<i>``."""
        return f"{self.prefix}-h{self._check_host(i)}"

    def host_ip(self, i: int) -> str:
        """Underlay address of host ``i`` on its ``eth0``."""
        return f"{UNDERLAY_NET}.{self._check_host(i)}"

    def host_cidr(self, i: int) -> str:
        return f"{self.host_ip(i)}/24"

    def neighbours(self, i: int) -> list[int]:
        """Hosts adjacent to ``i`` in the topology (sorted)."""
        return list(self._adj[self._check_host(i)])

    def links(self) -> list[tuple[int, int]]:
        """Undirected underlay links (i < j) of the topology."""
        return sorted(topo.edges(self.topology, self.hosts))

    def containers(self, i: int) -> int:
        """Number of container namespaces on host ``i``."""
        return self.state.containers.get(self._check_host(i), 0)

    def _check_container(self, i: int, j: int) -> None:
        if not isinstance(j, int) or not 1 <= j <= self.containers(i):
            raise NotFound(f"host h{i} of lab {self.prefix} has no container {j!r}",
                           fix=f"containers of h{i} are 1..{self.containers(i)}; add one with add_container")

    def container_ns(self, i: int, j: int) -> str:
        """Namespace of container ``j`` (from 1) on host ``i``: ``<prefix>-h<i>-c<j>``."""
        self._check_container(i, j)
        return f"{self.prefix}-h{i}-c{j}"

    def container_ip(self, i: int, j: int) -> str:
        """Overlay address the lab gives container j of host i (10.32.<i>.<j>)."""
        self._check_container(i, j)
        return f"10.32.{i}.{j}"

    def container_cidr(self, i: int, j: int) -> str:
        return f"{self.container_ip(i, j)}/{CONTAINER_PREFIXLEN}"

    def namespaces(self) -> list[str]:
        """Every namespace this lab should have (underlay, hosts, containers)."""
        names = [self.ul_ns]
        for i in range(1, self.hosts + 1):
            names.append(self.host_ns(i))
            names.extend(self.container_ns(i, j) for j in range(1, self.containers(i) + 1))
        return names

    def resolve(self, target: str | int) -> str:
        """Namespace for a target such as ``h1``, ``1``, ``h1-c2``, ``h1c2`` or ``ul``."""
        t = str(target).strip().lower()
        if t in ("ul", "underlay"):
            return self.ul_ns
        m = re.fullmatch(r"h?(\d+)(?:-?c(\d+))?", t)
        if not m:
            raise UsageError(f"bad lab target {target!r}", fix="use h<i> (or i), h<i>-c<j>, or ul")
        i = int(m.group(1))
        return self.container_ns(i, int(m.group(2))) if m.group(2) else self.host_ns(i)
