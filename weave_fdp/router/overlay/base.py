"""The hook between the mesh (control plane) and the overlays (data planes).

The router keeps a list of overlays (see ``weave_fdp.router.overlay.OVERLAY_FACTORIES``),
advertises their names in the handshake's features message, calls ``on_mesh`` after
every topology or route change, forwards overlay control messages from peers, and
fills each connection's mode/reason/mtu in ``report`` from ``connection_status``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from weave_fdp.router.api import ApiServer
    from weave_fdp.router.mesh.node import MeshNode


@dataclass(frozen=True)
class PeerInfo:
    """One peer of the mesh as the data plane needs it."""

    name: str        # 48-bit MAC form, e.g. "7e:12:34:56:78:9a"
    nickname: str    # hostname
    short_id: int    # 12 bits, unique in the mesh; fastdp VNI = src | dst << 12
    uid: int         # random per start (incarnation)
    reachable: bool  # a route to it exists


@dataclass(frozen=True)
class DirectConnection:
    """A handshaken TCP control connection to a neighbour."""

    peer: str                      # peer name
    remote_ip: str                 # underlay address of that peer
    remote_port: int               # its TCP port on this connection (ephemeral when inbound)
    outbound: bool                 # we dialed it
    established: bool              # both sides accepted the connection
    overlays: tuple[str, ...]      # overlays the remote advertised, e.g. ("fastdp", "sleeve")


@dataclass(frozen=True)
class MeshView:
    """Snapshot of the mesh passed to overlays after every change."""

    local: PeerInfo
    peers: dict[str, PeerInfo]                 # by peer name, local included
    connections: dict[str, DirectConnection]   # direct connections by peer name
    unicast: dict[str, str]                    # destination peer name -> next-hop peer name (direct)
    broadcast: dict[str, list[str]]            # source peer name -> next hops from THIS peer on its tree


@dataclass
class ReportPart:
    """One contributor to a top-level ``report`` section."""

    fn: Callable[[], Any]
    merge: Callable[[Any, Any], Any] | None = None   # (what the others gave, mine) -> section


@dataclass
class RouterContext:
    """What an overlay (or IPAM/DNS part) gets from the router at start."""

    api: "ApiServer"                                        # .register(op, handler)
    config: Any                                             # weave_fdp.router.config.RouterConfig
    state_dir: Path
    local: PeerInfo
    send_overlay_control: Callable[[str, bytes], bool]      # (peer name, payload) -> sent?
    loop: asyncio.AbstractEventLoop
    mesh: "MeshNode | None" = None                          # gossip channels: mesh.register_channel(...)
    mesh_view: Callable[[], MeshView] | None = None         # current view on demand
    report_parts: dict[str, list[ReportPart]] = field(default_factory=dict)
    fastdp_control: Any = None                              # switch.FastdpControl, offered by fastdp
    switch: Any = None                                      # switch.SwitchDriver, run by the router
    ipam: Any = None                                        # ipam.service.IpamService (None: IPAM off)
    container_listeners: list[Any] = field(default_factory=list)   # containers.ContainerListener (DNS)

    def add_report_section(self, key: str, fn: Callable[[], Any],
                           merge: Callable[[Any, Any], Any] | None = None) -> None:
        """Contribute to top-level ``report[key]`` (e.g. "ipam", "dns", "datapath").

        Several parts may fill one key (fastdp and the sleeve both fill "datapath"):
        the parts without ``merge`` come first (the last of them wins), then each part
        with ``merge`` folds its value in as ``merge(section so far, value)``. So the
        result does not depend on which overlay started first.
        """
        self.report_parts.setdefault(key, []).append(ReportPart(fn, merge))

    def report_section(self, key: str) -> Any:
        """The value of ``report[key]`` from its parts; a part that fails is logged and skipped."""
        parts = sorted(self.report_parts.get(key, []), key=lambda p: p.merge is not None)
        out: Any = None
        for part in parts:
            try:
                value = part.fn()
                out = value if part.merge is None else part.merge(out, value)
            except Exception as exc:  # one broken part must not hide the others
                log.warning("report section %s: a part failed: %s", key, exc)
        return out


@runtime_checkable
class Overlay(Protocol):
    """A data plane the router can run ("fastdp" or "sleeve")."""

    name: str

    async def start(self, ctx: RouterContext) -> None: ...

    async def stop(self) -> None: ...

    def on_mesh(self, view: MeshView) -> None:
        """Called after every topology/route change (must not block)."""

    def on_overlay_control(self, peer: str, payload: bytes) -> None:
        """An overlay control message from ``peer`` (over the TCP connection)."""

    def connection_status(self, peer: str) -> dict[str, Any]:
        """{"mode": "fastdp"|"sleeve"|None, "reason": str|None, "mtu": int|None, "rtt_ms": float|None}"""

    def status(self) -> dict[str, Any]:
        """Goes into report["overlays"][name]."""
