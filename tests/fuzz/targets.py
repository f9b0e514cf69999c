"""Fuzz targets: one function per decoder that reads the network or the disk.

Each target takes arbitrary bytes and drives them through the same code the router
runs on what arrives (a socket, a file), with only the kernel edge replaced (fake
sockets, a temporary state dir). A target returns normally when the input was
accepted or refused the documented way (``ProtocolError`` and its children, a typed
``FdpError``, a short read); anything else escaping it is a bug: the fuzzer saves the
input under ``tests/fuzz_regressions/<target>/`` and ``make test`` replays it.

``seeds()`` of each target are valid inputs built with the project's own encoders,
so the fuzzer starts from inside the format instead of guessing its magic numbers.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import QTYPE, DNSRecord

from weave_fdp.errors import FdpError, ProtocolError
from weave_fdp.datapath.fastdp import heartbeat as fhb
from weave_fdp.datapath.sleeve import frames as sframes
from weave_fdp.datapath.sleeve import crypto, wire
from weave_fdp.datapath.sleeve.crypto import Sealer
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.router import containers as rcontainers
from weave_fdp.router.api import ApiServer
from weave_fdp.router.config import parse_peer_address
from weave_fdp.router.dns import wire as dwire
from weave_fdp.router.dns.records import Records
from weave_fdp.router.dns.responder import handle_query
from weave_fdp.router.ipam import persist
from weave_fdp.router.ipam import wire as iwire
from weave_fdp.router.ipam.allocator import Allocator, Mode
from weave_fdp.router.ipam.sim import Cluster, sim_name
from weave_fdp.router.mesh import codec
from weave_fdp.router.mesh.codec import ConnEntry, Features, PeerEntry
from weave_fdp.router.mesh.node import Identity, MeshNode
from weave_fdp.router.mesh.transport import TcpTransport
from weave_fdp.router.state import RouterState

LOCAL = "02:00:00:00:00:01"
PEER_A = "02:00:00:00:00:02"
PEER_B = "02:00:00:00:00:03"
SECRET = bytes(range(32))


@dataclass(frozen=True)
class Target:
    name: str
    what: str                          # the decoder(s) it drives, for the summary table
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


TARGETS: dict[str, Target] = {}


def target(name: str, what: str, seeds: Callable[[], list[bytes]]) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def deco(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, what, fn, seeds)
        return fn
    return deco


# ---------------------------------------------------------------- helpers

_LOOP: asyncio.AbstractEventLoop | None = None


def _run(coro: Any) -> Any:
    """Run ``coro`` on one loop kept for the whole process (a new loop per input is slow)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)


def split_records(data: bytes, limit: int = 64) -> list[bytes]:
    """Cut fuzz input into records: u16 big-endian length, then that many bytes (the last
    record takes what is left). Lets one input be a sequence of datagrams or messages."""
    out, off = [], 0
    while off < len(data) and len(out) < limit:
        if len(data) - off < 2:
            out.append(data[off:])
            break
        n = int.from_bytes(data[off:off + 2], "big")
        out.append(data[off + 2:off + 2 + n])
        off += 2 + n
    return out


def join_records(records: list[bytes]) -> bytes:
    return b"".join(len(r).to_bytes(2, "big") + r for r in records)


def _features(name: str = PEER_A, nick: str = "fuzz") -> Features:
    return Features(name, nick, 7, 1000, 5, 9, ("fastdp", "sleeve"), False, 6783, "0")


def _entry(name: str, version: int = 2, conns: tuple[ConnEntry, ...] = ()) -> PeerEntry:
    return PeerEntry(name, "n", 11, 1000, version, 17, conns)


# ---------------------------------------------------------------- control plane: handshake

class _Writer:
    """Stands in for an asyncio StreamWriter: accepts writes, never blocks."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, b: bytes) -> None:
        self.data += b

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return default


def _handshake_seeds() -> list[bytes]:
    hello = codec.encode_frame(codec.encode_hello(codec.Hello(False, None)))
    feats = codec.encode_frame(codec.encode_features(_features()))
    crypto_hello = codec.encode_frame(codec.encode_hello(codec.Hello(True, bytes(32))))
    return [b"\x00" + codec.encode_preamble() + hello + feats,
            b"\x01" + codec.encode_preamble() + crypto_hello + codec.encode_frame(bytes(80)),
            b"\x00" + codec.encode_preamble(1, 1) + hello + feats]


@target("handshake", "preamble, hello, features (TcpTransport._exchange)", _handshake_seeds)
def fuzz_handshake(data: bytes) -> None:
    """The whole handshake as the listener runs it, the peer's bytes from ``data[1:]``;
    ``data[0]`` bit 0: the local router has a password."""
    if not data:
        return
    node = MeshNode(Identity(LOCAL, "local", 1, 1, 1), gossip_interval=0)
    tr = TcpTransport(node, password="pw" if data[0] & 1 else None)

    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data[1:])
        reader.feed_eof()
        try:
            await tr._exchange(reader, _Writer(), ("192.0.2.9", 40000))   # type: ignore[arg-type]
        except (ProtocolError, FdpError, asyncio.IncompleteReadError):
            pass
    _run(go())


# ---------------------------------------------------------------- control plane: messages and gossip

def _message_seeds() -> list[bytes]:
    topo = codec.encode_topology([_entry(PEER_A, conns=(ConnEntry(LOCAL, "192.0.2.1:6783", True, True),)),
                                  _entry(PEER_B, conns=(ConnEntry(PEER_A, "192.0.2.2:6783", False, True),))])
    digest = codec.encode_digest(codec.DIGEST_FULL, [(PEER_A, (1000, 3, 11)), (PEER_B, (1000, 2, 11))])
    msgs = [codec.encode_message(codec.HEARTBEAT, {}),
            codec.encode_message(codec.GOSSIP, {"c": "topology", "s": PEER_A, "p": topo}),
            codec.encode_message(codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": PEER_A, "p": digest}),
            codec.encode_message(codec.GOSSIP, {"c": codec.TOPOLOGY_DIGEST, "s": PEER_A,
                                                "p": codec.encode_summary([(PEER_A, (1, 2, 3))])}),
            codec.encode_message(codec.GOSSIP, {"c": codec.TOPOLOGY_REQUEST, "s": PEER_A,
                                                "p": codec.encode_request([LOCAL, PEER_B])}),
            codec.encode_message(codec.GOSSIP_BROADCAST, {"c": "dns", "s": PEER_B, "p": b"x"}),
            codec.encode_message(codec.GOSSIP_UNICAST, {"c": "ipam", "s": PEER_B, "d": LOCAL, "p": b"y"}),
            codec.encode_message(codec.OVERLAY_CONTROL, {"p": b"\x01\x02"}),
            codec.encode_message(codec.CLOSE, {"r": "bye"})]
    return [b"\x02" + b"".join(codec.encode_frame(m) for m in msgs),
            b"\x01" + b"".join(codec.encode_frame(m) for m in msgs[:2])] + [b"\x02" + codec.encode_frame(m)
                                                                            for m in msgs]


class FuzzLink:
    """A handshaken neighbour (implements mesh.link.Link) whose sends are only counted."""

    def __init__(self, node: MeshNode, peer: str, version: int) -> None:
        self.node = node
        self.peer = peer
        self.features = _features(peer)
        self.outbound = True
        self.remote_host, self.remote_port = "192.0.2.2", 6783
        self.protocol_version = version
        self.established = False
        self.tx_bytes = self.rx_bytes = 0
        self.closed: str | None = None

    def send(self, tag: int, body: Any) -> None:
        self.tx_bytes += len(codec.encode_message(tag, body))

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.node.link_down(self, reason)


class _Channel:
    """A gossip channel that decodes nothing: what reaches it passed the codec."""

    def gossip(self) -> bytes | None:
        return b"state"

    def on_gossip(self, src: str, payload: bytes) -> bytes | None:
        return payload[:8] or None

    def on_gossip_broadcast(self, src: str, payload: bytes) -> None:
        pass

    def on_gossip_unicast(self, src: str, payload: bytes) -> None:
        pass


def _mesh_node(version: int = codec.PROTOCOL_MAX) -> tuple[MeshNode, FuzzLink, FuzzLink]:
    node = MeshNode(Identity(LOCAL, "local", 1, 1000, 1), gossip_interval=0, gossip_delay=0)
    for ch in ("ipam", "dns"):
        node.register_channel(ch, _Channel())
    return node, FuzzLink(node, PEER_A, version), FuzzLink(node, PEER_B, 1)


async def _settle(node: MeshNode) -> None:
    """Run what the messages scheduled (route recompute, gossip flush), then stop the node."""
    for _ in range(3):
        await asyncio.sleep(0)
    if node._recompute_handle is not None:
        node._recompute_handle.cancel()
        node._recompute()
    node.stop()
    if node._recompute_handle is not None:
        node._recompute_handle.cancel()
    if node.topo_gossip._retry_handle is not None:
        node.topo_gossip._retry_handle.cancel()


@target("mesh_messages", "frames, tags, gossip (all channels), topology entries/digests/requests, routes",
        _message_seeds)
def fuzz_mesh_messages(data: bytes) -> None:
    """Frames as a link's read loop gets them (length, decode_message) into a MeshNode with
    two neighbours (protocol 2 and 1); ``data[0]`` bit 1 picks the protocol-2 link."""
    if not data:
        return

    async def go() -> None:
        node, a, b = _mesh_node()
        node.link_up(a)
        node.link_up(b)
        link = a if data[0] & 2 else b
        reader = asyncio.StreamReader()
        reader.feed_data(data[1:])
        reader.feed_eof()
        try:
            while link.closed is None:
                header = await reader.readexactly(codec.FRAME_HEADER.size)
                payload = await reader.readexactly(codec.decode_frame_length(header))
                tag, body = codec.decode_message(payload)
                node.link_message(link, tag, body)
        except (ProtocolError, asyncio.IncompleteReadError):
            pass
        await _settle(node)
    _run(go())


def _payload_seeds() -> list[bytes]:
    entries = [_entry(PEER_A, 5, (ConnEntry(LOCAL, "192.0.2.1:6783", True, True),
                                  ConnEntry(PEER_B, "192.0.2.3:6783", True, True))),
               _entry(PEER_B, 3, (ConnEntry(PEER_A, "192.0.2.2:6783", False, True),)),
               _entry(LOCAL, 9)]
    return [b"\x00" + codec.encode_topology_v3(entries), b"\x04" + codec.encode_topology(entries),
            b"\x01" + codec.encode_digest(codec.DIGEST_DELTA, [(PEER_B, (1000, 7, 11))]),
            b"\x01" + codec.encode_digest(codec.DIGEST_FULL_REPLY, [(LOCAL, (5000, 1, 1))]),
            b"\x01" + codec.encode_summary([(PEER_A, (1, 2, 3))]),
            b"\x02" + codec.encode_request([LOCAL, PEER_A])]


@target("gossip_topology", "topology channel payloads: entries, digests, requests (topogossip + merge)",
        _payload_seeds)
def fuzz_gossip_topology(data: bytes) -> None:
    """One payload of a topology channel (``data[0]`` % 3: entries, digest, request),
    straight into TopologyGossip and the merge (no msgpack envelope to get past), on a
    link of protocol 3 (binary entries), or 2 when ``data[0]`` bit 2 is set."""
    if not data:
        return
    channel = ("topology", codec.TOPOLOGY_DIGEST, codec.TOPOLOGY_REQUEST)[data[0] % 3]

    async def go() -> None:
        node, a, _b = _mesh_node(2 if data[0] & 4 else codec.PROTOCOL_MAX)
        node.link_up(a)
        try:
            node.topo_gossip.on_message(a, channel, data[1:])
        except ProtocolError:
            pass
        await _settle(node)
    _run(go())


# ---------------------------------------------------------------- sleeve datagrams

class _FakeSock:
    """What the forwarder writes to (UDP socket, bridge port): bytes counted, nothing sent."""

    def __init__(self) -> None:
        self.sent = 0

    def sendmsg(self, parts: list, *_a: Any) -> int:
        n = sum(len(p) for p in parts)
        self.sent += n
        return n

    def send(self, b: bytes, *_a: Any) -> int:
        self.sent += len(b)
        return len(b)

    def setsockopt(self, *_a: Any) -> None:
        pass


def _forwarder(sealed: bool) -> Forwarder:
    local, a, b = (wire.name_to_bytes(n) for n in (LOCAL, PEER_A, PEER_B))
    f = Forwarder(local, "fuzz0", secret_for=(lambda peer: SECRET) if sealed else None)
    f.set_peers({a: ("192.0.2.2", 6783), b: ("192.0.2.3", 6783)})
    f.set_routes({a: a, b: b}, {a: [b], b: [a], local: [a, b]})
    f.usock, f.psock, f.probe_sock = _FakeSock(), _FakeSock(), _FakeSock()   # type: ignore[assignment]
    for link in f.links.values():
        link.version = 2
    return f


def _receive(f: Forwarder, dg: bytes) -> None:
    """One datagram through the receive loop's dispatch (the code between recvmsg and the
    bridge port), as the receive source's ``handle`` runs it on a non-GRO read."""
    buf = bytearray(dg)
    mv = memoryview(buf)
    from weave_fdp.datapath.sleeve.batch import Batcher
    batcher = Batcher()
    addr = ("192.0.2.2", 6783)
    if not buf:
        return
    if buf[0] == wire.PIECE_VERSION:
        f._rx_pieces(buf, mv, 0, len(buf), len(buf), addr, batcher)
    elif not f._fast_single(buf, mv, 0, len(buf), addr):
        f._datagram(mv, addr, batcher)
    f._flush(batcher)


def _frame(dst: bytes = b"\xff" * 6, n: int = 60) -> bytes:
    return dst + bytes.fromhex("0a0000000001") + b"\x08\x00" + bytes(n - 14)


def _sleeve_plain_seeds() -> list[bytes]:
    a, local = wire.name_to_bytes(PEER_A), wire.name_to_bytes(LOCAL)
    hdr = wire.encode_header(a)
    ent = wire.encode_entry(a, local, _frame())
    bcast = wire.encode_entry(a, wire.BROADCAST, _frame())
    frag = wire.FRAG.pack(1, 0, 100) + _frame(n=60)
    frag2 = wire.FRAG.pack(1, 60, 100) + bytes(40)
    return [join_records([hdr + b"\x01" + ent + _frame(),
                          hdr + b"\x01" + bcast + _frame(),
                          hdr + b"\x01" + wire.encode_entry(a, local, frag, flags=wire.E_FRAG) + frag,
                          hdr + b"\x01" + wire.encode_entry(a, local, frag2, flags=wire.E_FRAG) + frag2,
                          hdr + wire.encode_heartbeat(1, 1400),
                          hdr + wire.encode_heartbeat_ack(1),
                          hdr + wire.encode_probe(1, 200, 8),
                          hdr + wire.encode_probe_ack(1, 200)]),
            join_records(wire.split_pieces(a, 3, b"\x01" + wire.encode_entry(a, local, _frame(n=300))
                                           + _frame(n=300), 200, sealed=False)),
            join_records([hdr + b"\x01" + wire.encode_entry(a, wire.name_to_bytes(PEER_B), _frame()) + _frame()])]


@target("sleeve_plain", "sleeve datagrams without a password: header, FRAMES, fragments, pieces, "
        "heartbeats, PMTU probes, relaying", _sleeve_plain_seeds)
def fuzz_sleeve_plain(data: bytes) -> None:
    f = _forwarder(sealed=False)
    for dg in split_records(data):
        _receive(f, dg)


def _sleeve_sealed_seeds() -> list[bytes]:
    a, local = wire.name_to_bytes(PEER_A), wire.name_to_bytes(LOCAL)
    ent = wire.encode_entry(a, local, _frame()) + _frame()
    big = wire.encode_entry(a, local, _frame(n=500)) + _frame(n=500)
    return [join_records([b"\x00" + b"\x01" + ent, b"\x00" + wire.encode_heartbeat(5, 1400),
                          b"\x01" + b"\x01" + big, b"\x02" + b"\x01" + big, b"\x03" + ent]),
            join_records([b"\x03" + bytes(wire.encode_header(a, sealed=True)) + bytes(40)])]


def _seal_record(f: Forwarder, rec: bytes) -> list[bytes]:
    """A record of the sealed target -> datagrams: byte 0 says how the rest is sent
    (0: sealed whole datagram, 1: secretbox pieces, 2: AES-256-GCM pieces, else: raw,
    e.g. forged or replayed), so the fuzzer reaches the bodies behind authentication."""
    if not rec:
        return []
    a, local = wire.name_to_bytes(PEER_A), wire.name_to_bytes(LOCAL)
    sealer = f.__dict__.setdefault("fuzz_sealer", Sealer(SECRET, a, local))   # PEER_A sealing toward us
    kind, body = rec[0] % 4, rec[1:]
    if kind == 0:
        return [sealer.seal(body)]
    if kind == 2 and f.aesgcm:
        box = bytearray(body) + bytearray(crypto.GCM_TAG)
        seq, sealed = sealer.seal_gcm_inplace(memoryview(box), 0, len(body))
        return wire.split_pieces(a, seq, bytes(sealed), 200, sealed=True, aesgcm=True)
    if kind in (1, 2):
        box = bytearray(32) + bytearray(body)
        seq, sealed = sealer.seal_box_inplace(memoryview(box), 32, len(box))
        return wire.split_pieces(a, seq, bytes(sealed), 200, sealed=True)
    return [body]


@target("sleeve_sealed", "sealed sleeve datagrams and pieces (secretbox, AES-256-GCM): replay window, "
        "authentication, the bodies behind it", _sleeve_sealed_seeds)
def fuzz_sleeve_sealed(data: bytes) -> None:
    f = _forwarder(sealed=True)
    for rec in split_records(data, 16):
        try:
            dgs = _seal_record(f, rec)
        except (ValueError, ProtocolError):
            continue      # a body the sender itself would not send (e.g. too short to cut)
        for dg in dgs:
            _receive(f, dg)


# ---------------------------------------------------------------- frames from containers, fastdp heartbeats

def _frame_seeds() -> list[bytes]:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1400, 0, 0x4000, 64, 6, 0, bytes(4), bytes(4))
    tcp = bytes(12) + b"\x50" + bytes(7)
    eth = _frame()[:12] + b"\x08\x00"
    vnet = struct.pack("=BBHHHH", 0, 1, 54, 1400, 34, 16)
    return [vnet + eth + ip + tcp + bytes(100), bytes(10) + eth[:12] + b"\x86\xdd" + bytes(40 + 8 + 50),
            bytes(10) + eth[:12] + b"\x81\x00\x00\x01\x08\x00" + ip + tcp]


@target("container_frames", "frames captured from containers: virtio_net_hdr, GSO sizes, ICMP too-big "
        "replies (sleeve/frames.py)", _frame_seeds)
def fuzz_container_frames(data: bytes) -> None:
    if len(data) < sframes.VNET.size:
        return
    vnet, frame = data[:sframes.VNET.size], data[sframes.VNET.size:]
    sframes.wire_segment_len(vnet, frame)
    sframes.headers_len(frame)
    sframes.too_big_reply(frame, 1376)


def _hb_seeds() -> list[bytes]:
    return [fhb.encode_frame(fhb.Heartbeat(fhb.PING, 5, 1, 99), 200),
            fhb.encode_frame(fhb.Heartbeat(fhb.PONG, 4095, 2**32 - 1, 2**64 - 1), 60)]


@target("fastdp_heartbeat", "fastdp heartbeat frames read from the VXLAN device", _hb_seeds)
def fuzz_fastdp_heartbeat(data: bytes) -> None:
    fhb.decode_frame(data)


# ---------------------------------------------------------------- the router API

def _api_seeds() -> list[bytes]:
    return [b'{"op": "ping", "args": {}}\n', b'{"op": "ops"}\n', b'{"op": "nope", "args": []}\n',
            b'[1, 2]\n', b'{"op": 5}\n']


_API: ApiServer | None = None


@target("api_request", "router API request lines (ApiServer.dispatch)", _api_seeds)
def fuzz_api_request(data: bytes) -> None:
    global _API
    if _API is None:
        _API = ApiServer(name="\0weave-fdp/fuzz-unbound")   # never bound: dispatch only
    reply = _run(_API.dispatch(data))
    if reply.get("ok") is False and "internal error" in reply["error"]["message"]:
        raise AssertionError(f"API parser hit a bug: {reply['error']['message']}")
    json.dumps(reply, default=str)     # the reply must be sendable


# ---------------------------------------------------------------- persistence files

def _state_seeds() -> list[bytes]:
    peer = json.dumps({"name": "7e:00:00:00:00:01", "short_id": 12}).encode()
    direct = json.dumps({"peers": ["192.0.2.1:6783", "192.0.2.2"]}).encode()
    cont = json.dumps({"vethwepl1234": {"target": "netns:a", "netns_path": "/run/netns/a",
                                        "mac": "02:00:00:00:00:09", "cidrs": ["10.32.0.1/12"]}}).encode()
    return [join_records([peer, direct, cont]), join_records([b"", b"{", b"[]"])]


_TMP = None


@target("state_files", "state dir files: peer.json, direct-peers.json, fastdp-containers.json, "
        "as a launch and an attach read them", _state_seeds)
def fuzz_state_files(data: bytes) -> None:
    """Three records = the three files (written as they are); then what a launch does with
    them (peer name and short ID, direct peers parsed as addresses) and what attach does
    with the container records (the address-in-use check)."""
    global _TMP
    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="wfdp-fuzz-state-")
    d = Path(_TMP.name)
    recs = split_records(data, 3) + [b""] * 3
    for name, rec in zip(("peer.json", "direct-peers.json", rcontainers.STATE_FILE), recs):
        (d / name).write_bytes(rec)
    st = RouterState(d)
    try:   # a damaged file is recovered from its previous copy, or stops the launch naming it
        st.load_peer()
        direct = st.load_direct()
    except FdpError:
        direct = []
    for p in direct:
        try:
            parse_peer_address(p, 6783)
        except FdpError:
            pass
    c = rcontainers.Containers(host=None, state_dir=d)   # damaged records are rebuilt from the kernel
    try:
        c._in_use(["10.32.0.1/12"], except_if="")
    except FdpError:
        pass


# ---------------------------------------------------------------- IPAM: gossip and its state file

def _ipam_cluster() -> Any:

    c = Cluster(3, seed=1)
    c.settle(10)
    for i, name in enumerate(c.names):
        c.peers[name].allocate(f"c{i}", c.range, c.now)
    c.settle(5)
    return c


def _ipam_gossip_seeds() -> list[bytes]:

    c = _ipam_cluster()
    states = [c.peers[n].gossip() for n in c.names]
    lo, hi = c.range
    return [join_records(states), join_records([iwire.encode("w", n=[lo, lo + 256]), iwire.encode("c", a=lo + 5),
                                                iwire.encode("x", a=lo + 6, y="taken"), iwire.encode("k"),
                                                iwire.encode("n", n=[lo, hi])]),
            join_records([states[0], iwire.encode("h", s=c.peers[c.names[1]]._state())])]


@target("ipam_gossip", "ipam channel payloads (state, want/no space, claims, handoff) into an allocator",
        _ipam_gossip_seeds)
def fuzz_ipam_gossip(data: bytes) -> None:
    """Records = payloads from one neighbour, each into a fresh consensus-mode allocator, then a tick."""

    a = Allocator(sim_name(9), (0x0A200000, 0x0A300000), Mode("consensus", 2), random.Random(0))
    a.set_peers({sim_name(0), sim_name(1)}, {})
    now = 1.0
    for rec in split_records(data, 16):
        try:
            a.on_message(sim_name(0), rec, now)
        except ProtocolError:
            pass
        now += 0.5
        a.tick(now)
        a.take_outbox()
    a.allocate("x", (0x0A200000, 0x0A300000), now)


def _ipam_file_seeds() -> list[bytes]:

    c = _ipam_cluster()
    return [persist.encode(c.peers[n].snapshot()) for n in c.names]


@target("ipam_state_file", "the IPAM file of the state dir (persist.decode, Allocator.restore)", _ipam_file_seeds)
def fuzz_ipam_state_file(data: bytes) -> None:
    """The file as read at launch; the CRC is recomputed half the time (``data`` bit 0 of the
    last byte) so the fuzzer also reaches the content checks behind it."""


    if data and data[-1] & 1 and len(data) > persist.HEADER.size:
        body = data[persist.HEADER.size:]
        data = persist.HEADER.pack(persist.MAGIC, persist.FORMAT, zlib.crc32(body)) + body
    try:
        snap = persist.decode(data, "ipam.bin")
    except FdpError:
        return
    a = Allocator("02:00:00:00:00:09", (0x0A200000, 0x0A300000), Mode("consensus", 2), random.Random(0))
    try:
        a.restore(snap)
    except FdpError:
        return
    a.allocate("x", (0x0A200000, 0x0A300000), 1.0)
    a.gossip()


# ---------------------------------------------------------------- DNS: queries and gossip

def _dns_query_seeds() -> list[bytes]:

    qs = [DNSRecord.question("web.weave.local.", "A"), DNSRecord.question("big.weave.local.", "A"),
          DNSRecord.question("1.1.32.10.in-addr.arpa.", "PTR"), DNSRecord.question("nope.weave.local.", "AAAA"),
          DNSRecord.question("example.org.", "A")]
    out = [b"\x00" + q.pack() for q in qs]
    tcp = qs[1].pack()
    return out + [b"\x01" + len(tcp).to_bytes(2, "big") + tcp, b"\x00" + qs[0].pack()[:-3]] + \
        [b"\x00" + DNSRecord.question("web.weave.local.", QTYPE.get(t)).pack() for t in (255, 28)]


@target("dns_query", "DNS queries to the weaveDNS responder (UDP and TCP framing)", _dns_query_seeds)
def fuzz_dns_query(data: bytes) -> None:

    if data:
        handle_query(data[1:], tcp=bool(data[0] & 1))


def _dns_gossip_seeds() -> list[bytes]:

    r = Records(PEER_A)
    r.add("web.weave.local.", "netns:web", "10.32.0.1", now=1.0)
    r.add("db.weave.local.", "netns:db", "10.32.0.2", now=1.0)
    r.remove(2.0, container="netns:db")
    return [join_records([dwire.encode(r.entries())]), join_records([dwire.encode(r.entries()[:1])] * 2)]


@target("dns_gossip", "dns channel payloads merged into the records", _dns_gossip_seeds)
def fuzz_dns_gossip(data: bytes) -> None:

    r = Records(LOCAL)
    r.add("mine.weave.local.", "netns:mine", "10.32.0.9", now=1.0)
    now = 5.0
    for rec in split_records(data, 8):
        try:
            r.merge(dwire.decode(rec), now)
        except ProtocolError:
            pass
        now += 1
    r.lookup("web.weave.local.")
    r.expire(now + 1e6)
