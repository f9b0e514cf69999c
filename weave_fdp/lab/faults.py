"""Underlay faults in a lab: links cut and UDP ports blocked, by nftables in the underlay namespace.

Each fault is recorded in the lab's state (so ``lab status`` and another process see
it) and undone idempotently.
"""

from __future__ import annotations

from weave_fdp.errors import UsageError
from weave_fdp.lab import underlay
from weave_fdp.lab.names import LabNames
from weave_fdp.plumbing.netns import run_in_netns


class LabFaults(LabNames):
    """Fault injection on one lab's underlay (a part of ``Lab``; ``_save`` is LabBuild's)."""

    def _pair(self, i: int, j: int) -> tuple[int, int]:
        self._check_host(i)
        self._check_host(j)
        if i == j:
            raise UsageError(f"h{i} and h{j} are the same host", fix="name two different hosts")
        return (min(i, j), max(i, j))

    def _nft(self, command: str) -> None:
        run_in_netns(self.ul_ns, ["nft", command], timeout=10)

    def cut(self, i: int, j: int) -> None:
        """Drop all underlay traffic between hosts i and j (both directions)."""
        pair = self._pair(i, j)
        if pair not in self.state.cuts:
            self._nft(underlay.cut_command(*pair))
            self.state.cuts.append(pair)
            self._save()

    def restore(self, i: int, j: int) -> None:
        """Undo :meth:`cut` (no-op when not cut)."""
        pair = self._pair(i, j)
        if pair in self.state.cuts:
            self._nft(underlay.cut_command(*pair, restore=True))
            self.state.cuts.remove(pair)
            self._save()

    def block_udp_port(self, i: int, j: int, port: int) -> None:
        """Drop UDP from or to ``port`` between hosts i and j (both directions)."""
        key = (*self._pair(i, j), self._check_port(port))
        if key not in self.state.udp_blocks:
            self._nft(underlay.udp_block_command(*key))
            self.state.udp_blocks.append(key)
            self._save()

    def unblock_udp_port(self, i: int, j: int, port: int) -> None:
        """Undo :meth:`block_udp_port` (no-op when not blocked)."""
        key = (*self._pair(i, j), self._check_port(port))
        if key in self.state.udp_blocks:
            self._nft(underlay.udp_block_command(*key, unblock=True))
            self.state.udp_blocks.remove(key)
            self._save()

    @staticmethod
    def _check_port(port: int) -> int:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"bad UDP port {port!r}", fix="use 1..65535")
        return port
