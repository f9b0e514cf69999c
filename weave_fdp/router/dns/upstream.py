"""The host's upstream resolvers and forwarding to them.

Names outside the domain (and PTR questions for addresses we do not know) go to the
nameservers of the host's /etc/resolv.conf, never to our own listen address, one
after another with a timeout each; the first answer is relayed with the client's ID.
When none answers the client gets SERVFAIL. The file is re-read when it changes
(checked at most every few seconds), as resolvers do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from dnslib import DNSRecord

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
PORT = 53
TIMEOUT_S = 2.0           # per upstream server
MAX_SERVERS = 3           # as resolv.conf(5): the first three
RECHECK_S = 5.0           # how often the file's mtime is looked at


def parse_resolv_conf(text: str, exclude: set[str] = frozenset()) -> list[str]:
    """Nameserver addresses of a resolv.conf text, minus ``exclude`` (ourselves), first three."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            addr = parts[1].split("%", 1)[0]
            try:
                ip = str(ipaddress.ip_address(addr))
            except ValueError:
                continue
            if ip not in exclude and ip not in out:
                out.append(ip)
    return out[:MAX_SERVERS]


@dataclass
class Upstream:
    path: str = RESOLV_CONF
    exclude: set[str] = field(default_factory=set)
    timeout: float = TIMEOUT_S
    port: int = PORT
    _servers: list[str] = field(default_factory=list)
    _mtime: float | None = None
    _checked: float = -1e9

    def servers(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        if now - self._checked >= RECHECK_S:
            self._checked = now
            try:
                st = os.stat(self.path)
                if st.st_mtime != self._mtime:
                    with open(self.path) as f:
                        self._servers = parse_resolv_conf(f.read(), self.exclude)
                    self._mtime = st.st_mtime
            except OSError as exc:
                log.debug("cannot read %s: %s", self.path, exc)
                self._servers, self._mtime = [], None
        return list(self._servers)

    async def forward(self, request: DNSRecord, *, tcp: bool) -> bytes | None:
        """The first upstream answer to ``request`` (client's ID put back), or None."""
        client_id = request.header.id
        for server in self.servers():
            query = DNSRecord.parse(request.pack())     # a copy with an ID of our own
            query.header.id = random.getrandbits(16)
            data = bytes(query.pack())
            try:
                if tcp:
                    answer = await asyncio.wait_for(_tcp_exchange(server, self.port, data), self.timeout)
                else:
                    answer = await asyncio.wait_for(_udp_exchange(server, self.port, data), self.timeout)
            except (OSError, asyncio.TimeoutError, EOFError) as exc:
                log.debug("upstream %s: %s", server, exc or type(exc).__name__)
                continue
            if len(answer) < 12 or answer[:2] != data[:2]:
                continue
            return struct.pack("!H", client_id) + answer[2:]
        return None


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, want_id: bytes) -> None:
        self.want_id = want_id
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.want_id and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _udp_exchange(server: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(lambda: _OneReply(data[:2]),
                                                           remote_addr=(server, port), family=family)
    try:
        transport.sendto(data)
        return await proto.done
    finally:
        transport.close()


async def _tcp_exchange(server: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise EOFError("upstream closed the connection") from exc
    finally:
        writer.close()
