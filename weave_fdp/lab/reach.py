"""Reachability in a lab: who can ping whom over the underlay, against what the topology says."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from weave_fdp.errors import FdpError
from weave_fdp.lab import topology as topo
from weave_fdp.lab.names import LabNames
from weave_fdp.plumbing.netns import run_in_netns


class LabReach(LabNames):
    """Underlay reachability of one lab (a part of ``Lab``)."""

    def reachability(self, timeout: float = 1.0) -> dict[tuple[int, int], bool]:
        """Ping every host from every other over the underlay, in parallel.

        ``(i, j) -> True`` when host i got an echo reply from host j's underlay address
        within ``timeout`` s (one probe every 0.2 s until then).
        """
        pairs = [(i, j) for i in range(1, self.hosts + 1) for j in range(1, self.hosts + 1) if i != j]
        deadline = max(1, round(timeout))

        def ping(pair: tuple[int, int]) -> bool:
            i, j = pair
            try:
                cp = run_in_netns(self.host_ns(i), ["ping", "-n", "-q", "-c", "1", "-i", "0.2",
                                                    "-w", str(deadline), self.host_ip(j)],
                                  check=False, timeout=deadline + 5)
            except FdpError:
                return False
            return cp.returncode == 0

        with ThreadPoolExecutor(max_workers=min(32, max(1, len(pairs)))) as pool:
            return dict(zip(pairs, pool.map(ping, pairs)))

    def wait_reachability(self, timeout: float = 5.0) -> dict[tuple[int, int], bool]:
        """Measure :meth:`reachability` until it equals :meth:`expected_reachability`
        or ``timeout`` s pass; the last measurement. After :meth:`restore` a host's
        failed ARP entry needs up to a second or two to resolve again."""
        deadline = time.monotonic() + timeout
        while True:
            reach = self.reachability()
            if reach == self.expected_reachability() or time.monotonic() >= deadline:
                return reach

    def expected_reachability(self) -> dict[tuple[int, int], bool]:
        """What :meth:`reachability` should give: the topology minus cut links."""
        exp = topo.expected_reachability(self.topology, self.hosts)
        for a, b in self.state.cuts:
            exp[(a, b)] = exp[(b, a)] = False
        return exp
