"""TCP transport of the mesh: listener, dialer, handshake, framed (sealed) links.

Defences against what arrives on TCP 6783: a handshake deadline (half-open or silent
connections are dropped), frame length limits, an accept throttle (token bucket) and
a cap on concurrent handshakes, a read deadline on established links (heartbeats keep
it alive), and every decode error closes only that connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections import deque
from typing import Any

from weave_fdp import __version__
from weave_fdp.errors import FdpError, ProtocolError
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import Features
from weave_fdp.router.mesh.crypto import KeyPair, SessionCipher
from weave_fdp.router.mesh.node import MeshNode

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0     # seconds for the whole handshake
CONNECT_TIMEOUT = 4.0       # seconds for TCP connect
HEARTBEAT_INTERVAL = 2.0    # seconds
READ_DEADLINE = 7.0         # seconds without any frame -> link is dead
MAX_HANDSHAKES = 32         # concurrent unauthenticated connections
ACCEPT_RATE = 20.0          # accepted connections per second (token bucket)
ACCEPT_BURST = 40
MAX_WRITE_BUFFER = 32 << 20  # bytes queued to a slow peer before we give up on it


class HandshakeError(FdpError):
    """The handshake failed; the message is what `status connections` shows."""


class TcpLink:
    """One handshaken TCP connection (implements node.Link)."""

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

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._heartbeat_loop())]
        self.send(codec.HEARTBEAT, {})  # tells the remote we kept this link

    def send(self, tag: int, body: Any) -> None:
        if self.closed_reason is not None:
            return
        plain = codec.encode_message(tag, body)
        payload = self.cipher.seal(plain) if self.cipher else plain
        frame = codec.encode_frame(payload)
        self.tx_bytes += len(frame)
        if tag in (codec.GOSSIP, codec.GOSSIP_BROADCAST, codec.GOSSIP_UNICAST):
            self.node.gossip_tx_bytes += len(frame)
        self.writer.write(frame)
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.close("peer too slow: write buffer full")

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        if not reason.startswith("peer closed") and not self.writer.is_closing():
            try:
                self.send(codec.CLOSE, {"r": reason[:200]})
            except Exception:
                pass
        self.closed_reason = reason
        self.writer.close()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        self.node.link_down(self, reason)

    async def _read_loop(self) -> None:
        try:
            while True:
                payload = await asyncio.wait_for(read_frame(self.reader), READ_DEADLINE)
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
            log.warning("peer %s(%s): protocol error, closing: %s", self.peer, self.features.nickname, exc)
            self.close(f"protocol error: {exc}")
        except asyncio.CancelledError:
            pass

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            self.send(codec.HEARTBEAT, {})


async def read_frame(reader: asyncio.StreamReader, limit: int = codec.MAX_FRAME) -> bytes:
    header = await reader.readexactly(codec.FRAME_HEADER.size)
    return await reader.readexactly(codec.decode_frame_length(header, limit))


class TcpTransport:
    """Listens on the mesh port and dials peers for a MeshNode."""

    def __init__(self, node: MeshNode, *, host: str = "0.0.0.0", password: str | None = None,
                 trusted_subnets: list[str] | None = None, overlays: tuple[str, ...] = ()) -> None:
        self.node = node
        self.host = host
        self.password = password.encode() if password else None
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_subnets or []]
        self.overlays = overlays
        self.server: asyncio.AbstractServer | None = None
        self.handshaking = 0
        self._tokens = float(ACCEPT_BURST)
        self._tokens_at = time.monotonic()
        self.failures: deque[dict[str, Any]] = deque(maxlen=32)  # recent failed inbound handshakes
        self.accepted = 0
        self.refused = 0

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._accept, self.host, self.node.port,
                                                     reuse_address=True, backlog=128)
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

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(ACCEPT_BURST, self._tokens + (now - self._tokens_at) * ACCEPT_RATE)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # ------------------------------------------------------------ accept / dial

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        remote = (str(peername[0]), int(peername[1]))
        if not self._take_token() or self.handshaking >= MAX_HANDSHAKES:
            self.refused += 1
            writer.close()  # throttled: the dialer retries with backoff
            return
        self.accepted += 1
        try:
            await self._handshake(reader, writer, outbound=False, remote=remote)
        except (HandshakeError, ProtocolError) as exc:
            self._record_failure(remote, str(exc))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            log.debug("inbound %s:%d dropped during handshake: %r", *remote, exc)
        except Exception:
            log.exception("inbound %s:%d: unexpected error in handshake", *remote)
            writer.close()

    def _record_failure(self, remote: tuple[str, int], reason: str) -> None:
        log.warning("connection from %s:%d failed: %s", remote[0], remote[1], reason)
        self.failures.append({"address": f"{remote[0]}:{remote[1]}", "reason": reason, "at": time.time()})

    async def dial(self, host: str, port: int) -> str:
        """Connect and handshake; returns the peer's name, raises with a readable reason."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
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
                         outbound: bool, remote: tuple[str, int]) -> TcpLink | None:
        self.handshaking += 1
        try:
            features, cipher, version = await asyncio.wait_for(
                self._exchange(reader, writer, remote), HANDSHAKE_TIMEOUT)
        except BaseException:
            writer.close()
            raise
        finally:
            self.handshaking -= 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = TcpLink(self.node, reader, writer, features, cipher, outbound, remote, version)
        if features.name == self.node.name:
            writer.close()
            raise HandshakeError("connected to ourselves")
        if self.node.link_up(link):
            link.start()
        elif not outbound:
            return None
        return link

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        remote: tuple[str, int]) -> tuple[Features, SessionCipher | None, int]:
        writer.write(codec.encode_preamble())
        vrange = codec.decode_preamble(await reader.readexactly(codec.PREAMBLE.size))
        version = codec.negotiate(vrange)
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
