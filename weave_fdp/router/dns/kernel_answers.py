"""weaveDNS's names in the kernel: the fastdp DNS map kept in step with the snapshots.

With fastdp, the program at every container veth answers standard A queries for the
names of a BPF map (bpf/lib/dns.h, docs/DNS.md "Answers in the kernel"); this keeps
that map equal to what ``datapath.dns_plan.plan_entries`` computes from the current
snapshot. Each snapshot swap (on the router's loop) computes the entries; the writes
run on the fastdp worker thread, one push at a time, the newest entries winning (a
burst of changes: at most one push waiting). Names that went are deleted before
anything is written, so a detached container's name stops being answered in the
kernel as soon as its snapshot is out. Without fastdp (``--no-fastdp``) nothing of
this runs and the userspace server answers everything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from weave_fdp.datapath import dns_plan
from weave_fdp.errors import FdpError
from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.dns.snapshot import Snapshot

log = logging.getLogger(__name__)


class KernelAnswers:
    def __init__(self, control: Any, settings: dns_plan.DnsSettings, domain: str, ttl: int) -> None:
        self.control = control          # the fastdp overlay (switch.FastdpControl)
        self.settings = settings
        self.domain = domain
        self.ttl = ttl
        self.names = 0                  # names in the map after the last push
        self.pushes = 0
        self.error: str | None = None
        self.rl = RateLimitedLog(log)
        self.enabled = True             # off (the API op dns-kernel): the server answers everything
        self._current: dict[bytes, dns_plan.DnsEntry] = {}
        self._want: dict[bytes, dns_plan.DnsEntry] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def on_snapshot(self, snap: Snapshot) -> None:
        """A new snapshot is current: the map must hold its names (on the router's loop)."""
        if self._stopped:
            return
        self._current = dns_plan.plan_entries(snap.names, self.domain, self.ttl)
        self._kick()

    async def set_enabled(self, on: bool) -> None:
        """Answers in the kernel on or off (off: the userspace server answers every query;
        ``bench dns`` measures both this way); waits until the kernel has it."""
        self.enabled = on
        self._kick()
        await self.flush()

    def _kick(self) -> None:
        self._want = self._current
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        while self._want is not None and not self._stopped:
            want, self._want = self._want, None
            on = self.enabled
            try:
                await self.control.set_dns_fastpath(self.settings if on else None, want if on else {})
            except Exception as exc:   # noqa: BLE001 - a bug here must not stop the pushes to come
                # the userspace server still answers every query the map cannot
                self.error = str(exc)
                self.rl.warning("push", "weaveDNS: cannot write the names into the kernel: %s", exc)
                continue
            self.error = None
            self.names = len(want) if on else 0
            self.pushes += 1

    async def flush(self) -> None:
        """Wait until the newest entries are in the map (tests, stop)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Off: every query goes to the userspace server (or nowhere, once it stops too)."""
        self._stopped = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.control.set_dns_fastpath(None, {})
        except (FdpError, OSError) as exc:
            log.warning("weaveDNS: cannot turn the kernel's answers off: %s", exc)

    def stats(self) -> dict[str, Any] | None:
        """The kernel's counters (answered, rate_limited, passed by reason) and the names held."""
        try:
            counts = self.control.dns_fastpath_stats()
        except (FdpError, OSError) as exc:
            self.rl.warning("stats", "weaveDNS: cannot read the kernel's counters: %s", exc)
            return None
        if counts is None:
            return None
        return {**counts, "on": self.enabled, "names": self.names, "error": self.error}
