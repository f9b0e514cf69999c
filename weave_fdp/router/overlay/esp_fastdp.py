"""Encrypted fastdp: which connections ride in IPsec ESP, and keeping the kernel's xfrm in step.

With ``--password``, a connection must be encrypted unless both ends trust each
other (``--trusted-subnets``). Such a connection stays on fastdp only when

1. this kernel has ESP (checked once at start: a throw-away state is added),
2. the peer's kernel has it too (it says so: the ``esp`` field of fastdp's
   "floods" overlay control message, see docs/PROTOCOL.md), and
3. the states and policies for it are installed (keys from the connection's
   session key, see ``datapath/esp.py``; new connection, new keys: rekey).

Otherwise it is carried by the sealed sleeve and the reason says which one failed
(``encryption: kernel lacks ESP``, ``encryption: peer's kernel lacks ESP``, ...).
The overlay switch reads the reason through ``FastdpOverlay.unusable_reason``.

:class:`EspPeers` is driven by the fastdp overlay: ``sync`` on its worker thread
after every plan (installs, rekeys, removes), ``flush`` when the router stops.
Stopping removes every state and policy, so fastdp's per-peer mode of those peers
is put to sleeve first: with no router, their frames are not sent at all rather
than sent in the clear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from weave_fdp.datapath import esp
from weave_fdp.router.overlay.switch import R_ESP as R_ESP_LOCAL

log = logging.getLogger(__name__)

R_ESP_PEER = "encryption: peer's kernel lacks ESP"
R_ESP_PENDING = "encryption: ESP keys not installed yet"


@dataclass(frozen=True)
class Installed:
    pair: esp.EspPair
    session: int    # id() of the connection's cipher the keys came from


class EspPeers:
    """The ESP side of the fastdp overlay (one per router)."""

    def __init__(self, port: int) -> None:
        self.spec: Any = None            # plumbing.xfrm.Spec once the kernel was checked
        self.port = port
        self.local_reason: str | None = "not checked yet"   # None: this kernel has ESP
        self.peer_ok: dict[str, bool] = {}                  # what each peer said of its kernel
        self.installed: dict[str, Installed] = {}
        self.errors: dict[str, str] = {}

    # ------------------------------------------------------------ kernel side (worker thread)
    def check_kernel(self) -> bool:
        """Whether this kernel can do encrypted fastdp; leaves nothing behind."""
        from weave_fdp.plumbing import xfrm

        self.spec = xfrm.Spec(esp.AEAD, esp.ICV_BITS, self.port)
        why = xfrm.supported(self.spec)
        self.local_reason = why
        if why:
            log.info("fastdp: no encrypted fastdp on this host: %s", why)
        else:
            log.info("fastdp: this kernel has ESP: encrypted connections stay on fastdp")
        return why is None

    @property
    def local_ok(self) -> bool:
        return self.local_reason is None

    def sync(self, want: dict[str, tuple[str, str, str, Any]], local_name: str,
             keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Make the kernel hold ``want``: peer -> (peer name, local IP, remote IP, cipher).

        A peer whose cipher changed (a new connection) is rekeyed; one neither wanted
        nor in ``keep`` (lost connections the datapath still sends to) loses its
        states and policies.
        """
        from weave_fdp.plumbing import xfrm

        if not self.local_ok:
            return
        for peer in list(self.installed):
            if peer not in want and peer not in keep:
                inst = self.installed.pop(peer)
                xfrm.remove(inst.pair.local_ip, inst.pair.remote_ip, self.port)
                log.info("fastdp: ESP with %s removed", peer)
        for peer, (name, local_ip, remote_ip, cipher) in want.items():
            inst = self.installed.get(peer)
            if inst is not None and inst.session == id(cipher) and inst.pair.remote_ip == remote_ip \
                    and inst.pair.local_ip == local_ip:
                continue
            pair = esp.derive(cipher.export(esp.EXPORT_LABEL), local_name, name, local_ip, remote_ip)
            try:
                if inst is not None and (inst.pair.remote_ip, inst.pair.local_ip) != (remote_ip, local_ip):
                    xfrm.remove(inst.pair.local_ip, inst.pair.remote_ip, self.port)
                xfrm.install(pair, self.spec)
            except Exception as exc:
                self.installed.pop(peer, None)
                if self.errors.get(peer) != str(exc):
                    log.error("fastdp: ESP with %s failed: %s", peer, exc)
                self.errors[peer] = str(exc)
                continue
            self.errors.pop(peer, None)
            self.installed[peer] = Installed(pair, id(cipher))
            log.info("fastdp: ESP with %s %s", peer, "rekeyed" if inst is not None else "keyed")

    def flush(self) -> None:
        """Remove every state and policy of ours (the router stops)."""
        from weave_fdp.plumbing import xfrm

        self.installed.clear()
        if self.spec is not None:
            try:
                xfrm.flush(self.port)
            except Exception as exc:
                log.error("fastdp: cannot remove the ESP states and policies: %s", exc)

    # ------------------------------------------------------------ decisions (event loop)
    def why_not(self, peer: str) -> str | None:
        """Why an encrypted connection to ``peer`` cannot ride on fastdp now, or None."""
        if not self.local_ok:
            return R_ESP_LOCAL
        if not self.peer_ok.get(peer, False):
            return R_ESP_PEER
        if peer in self.errors:
            return f"encryption: ESP setup failed: {self.errors[peer]}"
        if peer not in self.installed:
            return R_ESP_PENDING
        return None

    def forget(self, peer: str) -> None:
        self.peer_ok.pop(peer, None)

    def status(self) -> dict[str, Any]:
        return {"kernel": "ok" if self.local_ok else self.local_reason,
                "peers": {p: {"spi_out": f"0x{i.pair.out.spi:08x}", "spi_in": f"0x{i.pair.inb.spi:08x}",
                              "local": i.pair.local_ip, "remote": i.pair.remote_ip}
                          for p, i in sorted(self.installed.items())},
                "errors": dict(self.errors)}
