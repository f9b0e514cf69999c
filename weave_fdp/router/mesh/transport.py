"""TCP transport of the mesh: listener, dialer, handshake, framed (sealed) links.

Defences against what arrives on TCP 6783 (docs/SECURITY.md lists the figures):
admission per source and overall (``admission.HandshakeAdmission``: pending handshakes and
new connections per second), a handshake deadline (half-open or silent connections are
dropped), frame length limits checked on the 4-byte header before any body is read, a
small read buffer per connection, a shared budget for large frame bodies in flight
(``admission.RxBudget``, reserved before reading), a read deadline on established links
(heartbeats keep it alive), and every decode error closes only that connection. Failed
inbound handshakes are logged once per cause per interval and shown per source.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import logging
import random
import re
import socket
import time
from typing import Any

from weave_fdp import __version__
from weave_fdp.errors import FdpError, ProtocolError, UsageError
from weave_fdp.ratelog import RateLimitedLog
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.admission import (SMALL_FRAME, HandshakeAdmission, InboundFailures, RxBudget,
                                             source_of, write_overflow)
from weave_fdp.router.mesh.codec import Features
from weave_fdp.router.mesh.crypto import KeyPair, SessionCipher
from weave_fdp.router.mesh.node import MeshNode

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0     # seconds for the whole handshake
CONNECT_TIMEOUT = 4.0       # seconds for TCP connect
HEARTBEAT_INTERVAL = 2.0    # seconds
READ_DEADLINE = 7.0         # seconds without any frame -> link is dead
READ_BUFFER = 16 << 10      # bytes: a connection's reader stops reading the socket at twice this
READ_CHUNK = 64 << 10       # bytes read at a time into a large frame's body


class HandshakeError(FdpError):
    """The handshake failed; the message is what `status connections` shows."""


class TcpLink:
    """One handshaken TCP connection (implements link.Link)."""

    def __init__(self, node: MeshNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 features: Features, cipher: SessionCipher | None, outbound: bool, remote: tuple[str, int],
                 version: int) -> None:
        self.node = node
        self.reader = reader
        self.writer = writer
        self.features = features
        self.peer = features.name
        self.cipher = cipher
        self.outbound = outbound
        self.remote_host, self.remote_port = remote
        self.protocol_version = version
        self.established = False
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.since = time.time()
        self.closed_reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.rx_budget: FrameBudget | None = None   # set by the transport for inbound-limited reads
        self.log: RateLimitedLog | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._heartbeat_loop())]
        self.send(codec.HEARTBEAT, {})  # tells the remote we kept this link

    def send(self, tag: int, body: Any) -> None:
        if self.closed_reason is not None:
            return
        self._write(tag, body)
        why = write_overflow(self.writer.transport.get_write_buffer_size(), self._all_queued)
        if why is not None:
            self.close(why)

    def _write(self, tag: int, body: Any) -> None:
        plain = codec.encode_message(tag, body)
        payload = self.cipher.seal(plain) if self.cipher else plain
        frame = codec.encode_frame(payload)
        self.tx_bytes += len(frame)
        if tag in (codec.GOSSIP, codec.GOSSIP_BROADCAST, codec.GOSSIP_UNICAST):
            self.node.gossip_tx_bytes += len(frame)
        self.writer.write(frame)

    def _all_queued(self) -> int:
        """Bytes waiting to be sent to every peer (links of other kinds count nothing)."""
        total = 0
        for link in self.node.links.values():
            writer = getattr(link, "writer", None)
            if writer is not None:
                total += writer.transport.get_write_buffer_size()
        return total

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason   # first: nothing below may close it again
        if not reason.startswith("peer closed") and not self.writer.is_closing():
            try:
                self._write(codec.CLOSE, {"r": reason[:200]})
            except Exception:
                pass
        self.writer.close()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        self.node.link_down(self, reason)

    async def _read_loop(self) -> None:
        try:
            while True:
                payload = await asyncio.wait_for(
                    read_frame(self.reader, budget=self.rx_budget, source=source_of(self.remote_host)),
                    READ_DEADLINE)
                self.rx_bytes += len(payload) + 4
                plain = self.cipher.open(payload) if self.cipher else payload
                tag, body = codec.decode_message(plain)
                self.node.link_message(self, tag, body)
                if self.closed_reason is not None:
                    return
        except asyncio.TimeoutError:
            self.close(f"no heartbeat for {READ_DEADLINE:g} s")
        except asyncio.IncompleteReadError:
            self.close("connection closed by peer")
        except (ConnectionError, OSError) as exc:
            self.close(f"connection error: {exc}")
        except ProtocolError as exc:
            msg = "peer %s(%s): protocol error, closing: %s"
            if self.log is not None:
                self.log.warning(f"protocol error: {_cause(str(exc))}", msg, self.peer, self.features.nickname, exc)
            else:
                log.warning(msg, self.peer, self.features.nickname, exc)
            self.close(f"protocol error: {exc}")
        except asyncio.CancelledError:
            pass

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            self.send(codec.HEARTBEAT, {})


async def read_frame(reader: asyncio.StreamReader, limit: int = codec.MAX_FRAME,
                     budget: "FrameBudget | None" = None, source: str = "") -> bytes:
    """One frame's payload. The length is checked against ``limit`` before any of the body
    is read; a body over SMALL_FRAME is first reserved from ``budget`` (waiting for it), then
    read in chunks as it arrives, so an announced size costs nothing until it is granted."""
    header = await reader.readexactly(codec.FRAME_HEADER.size)
    length = codec.decode_frame_length(header, limit)
    if budget is None or length <= SMALL_FRAME:
        return await reader.readexactly(length)
    await budget.acquire(source, length)
    try:
        chunks, got = [], 0   # (a list: holds exactly what arrived, no over-allocation)
        while got < length:
            chunk = await reader.read(min(READ_CHUNK, length - got))
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(chunks), length)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        budget.release(source, length)


class FrameBudget:
    """``RxBudget`` for asyncio: ``acquire`` waits until the bytes are granted."""

    def __init__(self, book: RxBudget | None = None) -> None:
        self.book = book or RxBudget()
        self._freed = asyncio.Event()

    async def acquire(self, source: str, n: int) -> None:
        if self.book.try_reserve(source, n):
            return
        self.book.waits += 1
        while True:
            self._freed.clear()
            await self._freed.wait()
            if self.book.try_reserve(source, n):
                return

    def release(self, source: str, n: int) -> None:
        self.book.release(source, n)
        self._freed.set()


_DIGITS = re.compile(r"\d+")


def _cause(reason: str) -> str:
    """A failure reason without its numbers and quoted data: the key it is logged once per interval under."""
    return _DIGITS.sub("N", reason.split("(")[0].split(" b'")[0])[:80]


PROTOCOL_MAX_ENV = "WEAVE_FDP_PROTOCOL_MAX"


def protocol_max_from_env() -> int:
    """The highest protocol version to offer: codec.PROTOCOL_MAX, or less when
    WEAVE_FDP_PROTOCOL_MAX says so (a router that behaves as an older release would on the
    wire: tests of mixed meshes, or holding a new release back during a rolling upgrade)."""
    raw = os.environ.get(PROTOCOL_MAX_ENV)
    if raw is None:
        return codec.PROTOCOL_MAX
    if not raw.strip().isdigit() or not codec.PROTOCOL_MIN <= int(raw) <= codec.PROTOCOL_MAX:
        raise UsageError(f"{PROTOCOL_MAX_ENV}={raw!r} is not a protocol version",
                         fix=f"set it to {codec.PROTOCOL_MIN}..{codec.PROTOCOL_MAX}, or unset it")
    return int(raw)


class TcpTransport:
    """Listens on the mesh port and dials peers for a MeshNode."""

    def __init__(self, node: MeshNode, *, host: str = "0.0.0.0", password: str | None = None,
                 trusted_subnets: list[str] | None = None, overlays: tuple[str, ...] = (),
                 protocol_max: int = codec.PROTOCOL_MAX) -> None:
        """``protocol_max``: the highest protocol version offered (docs/PROTOCOL.md, section 1)."""
        self.node = node
        self.protocol_max = protocol_max
        self.host = host
        self.password = password.encode() if password else None
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_subnets or []]
        self.overlays = overlays
        self.server: asyncio.AbstractServer | None = None
        self.admission = HandshakeAdmission()
        self.rx_budget = FrameBudget()
        self.failures = InboundFailures()   # failed inbound handshakes, per source
        self.log = RateLimitedLog(log)
        self.accepted = 0
        self.refused = 0

    @property
    def handshaking(self) -> int:
        return self.admission.pending

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._accept, self.host, self.node.port,
                                                     reuse_address=True, backlog=128, limit=READ_BUFFER)
        except OSError as exc:
            raise FdpError(f"cannot listen on TCP port {self.node.port}: {exc.strerror}",
                           fix="is another router or program using it? choose another with --port") from exc

    async def stop(self) -> None:
        if self.server:
            self.server.close()

    def _is_trusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def status(self) -> dict[str, Any]:
        """Admission and buffer figures for the report (``router.inbound``)."""
        return {"accepted": self.accepted, "refused": self.refused, "handshaking": self.admission.pending,
                "sources_tracked": self.admission.sources(), "failed_handshakes": self.failures.total,
                "rx_budget": self.rx_budget.book.status()}

    # ------------------------------------------------------------ accept / dial

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        remote = (str(peername[0]), int(peername[1]))
        source = source_of(remote[0])
        why = self.admission.admit(source, time.monotonic())
        if why is not None:
            self.refused += 1
            self.log.info(f"refused {source}", "refusing connections from %s: %s", source, why)
            writer.close()  # throttled: the dialer retries with backoff
            return
        self.accepted += 1
        try:
            await self._handshake(reader, writer, outbound=False, remote=remote, source=source)
        except (HandshakeError, ProtocolError) as exc:
            self._record_failure(remote, str(exc))
        except asyncio.TimeoutError:
            self._record_failure(remote, f"no complete handshake within {HANDSHAKE_TIMEOUT:g} s")
        except asyncio.IncompleteReadError:
            self._record_failure(remote, "closed during the handshake")
        except OSError as exc:
            self._record_failure(remote, f"connection error during the handshake: {exc.strerror or exc}")
        except Exception:
            log.exception("inbound %s:%d: unexpected error in handshake", *remote)
            writer.close()

    def _record_failure(self, remote: tuple[str, int], reason: str) -> None:
        source = source_of(remote[0])
        row = self.failures.add(source, reason, time.time())
        self.log.warning(f"handshake from {source}: {_cause(reason)}",
                         "connection from %s:%d failed: %s (%d failed from %s in the last %g s)",
                         remote[0], remote[1], reason, row.attempts, source, self.failures.window)

    async def dial(self, host: str, port: int) -> str:
        """Connect and handshake; returns the peer's name, raises with a readable reason."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_BUFFER),
                                                    CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            raise HandshakeError(f"connect to {host}:{port}: timed out after {CONNECT_TIMEOUT:g} s") from None
        except socket.gaierror as exc:
            raise HandshakeError(f"unknown host {host!r}: {exc.strerror}") from None
        except OSError as exc:
            raise HandshakeError(f"connect to {host}:{port}: {exc.strerror or exc}") from None
        peername = writer.get_extra_info("peername") or (host, port)
        try:
            link = await self._handshake(reader, writer, outbound=True, remote=(str(peername[0]), port))
        except asyncio.IncompleteReadError:
            raise HandshakeError("peer closed the connection during the handshake "
                                 "(throttled, or it refused us: see its status)") from None
        except asyncio.TimeoutError:
            raise HandshakeError(f"handshake timed out after {HANDSHAKE_TIMEOUT:g} s") from None
        except ProtocolError as exc:
            raise HandshakeError(str(exc)) from None
        except OSError as exc:
            raise HandshakeError(f"connection error during handshake: {exc.strerror or exc}") from None
        if link is None:
            raise HandshakeError("connection dropped right after the handshake")
        if link.closed_reason is not None:
            if link.peer in self.node.links:
                return link.peer  # a duplicate of a live link: the target is satisfied
            raise HandshakeError(link.closed_reason)
        return link.peer

    # ------------------------------------------------------------ handshake

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                         outbound: bool, remote: tuple[str, int], source: str | None = None) -> TcpLink | None:
        """``source``: the admission key of an inbound connection (released when this returns)."""
        try:
            features, cipher, version = await asyncio.wait_for(
                self._exchange(reader, writer, remote), HANDSHAKE_TIMEOUT)
        except BaseException:
            writer.close()
            raise
        finally:
            if source is not None:
                self.admission.done(source)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = TcpLink(self.node, reader, writer, features, cipher, outbound, remote, version)
        link.rx_budget, link.log = self.rx_budget, self.log
        if features.name == self.node.name:
            writer.close()
            if features.uid != self.node.ident.uid:
                # two routers with one name would share one IPAM ring and one identity
                log.error("peer %s:%d runs under this router's name %s: a copied state dir or a repeated --name",
                          remote[0], remote[1], features.name)
                raise HandshakeError(f"peer {remote[0]} runs under this router's name {features.name} (a copied "
                                     f"state dir or a repeated --name); run weave-fdp reset on one of the two "
                                     f"hosts, or launch it with another --name")
            raise HandshakeError("connected to ourselves")
        if self.node.link_up(link):
            link.start()
        elif not outbound:
            return None
        return link

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        remote: tuple[str, int]) -> tuple[Features, SessionCipher | None, int]:
        writer.write(codec.encode_preamble(codec.PROTOCOL_MIN, self.protocol_max))
        vrange = codec.decode_preamble(await reader.readexactly(codec.PREAMBLE.size))
        version = codec.negotiate(vrange, (codec.PROTOCOL_MIN, self.protocol_max))
        keys = KeyPair() if self.password else None
        writer.write(codec.encode_frame(codec.encode_hello(codec.Hello(keys is not None, keys.public if keys else None))))
        hello = codec.decode_hello(await read_frame(reader, codec.MAX_HELLO))
        if hello.crypto != (keys is not None):
            raise HandshakeError("password mismatch: " + (
                "the peer uses a password and we have none (set --password or WEAVE_PASSWORD)"
                if hello.crypto else "we use a password and the peer has none"))
        cipher = None
        if keys is not None and hello.pubkey is not None and self.password is not None:
            cipher = SessionCipher(keys.session_key(hello.pubkey, self.password), keys.public, hello.pubkey)
        ours = self.node.features(random.getrandbits(63), self._is_trusted(remote[0]), self.overlays, __version__)
        plain = codec.encode_features(ours)
        writer.write(codec.encode_frame(cipher.seal(plain) if cipher else plain))
        await writer.drain()
        payload = await read_frame(reader, codec.MAX_HELLO)
        if cipher is not None:
            try:
                payload = cipher.open(payload)
            except ProtocolError:
                raise HandshakeError("password mismatch: could not decrypt the peer's features "
                                     "(the two routers have different passwords)") from None
        return codec.decode_features(payload), cipher, version
