"""Run one host's sleeve without the router, from a static JSON file (tests, benchmarks).

    python -m weave_fdp.datapath.sleeve.run CONFIG.json

CONFIG: {"local": NAME, "ifname": "vethwe-pcap", "bridge": "weave" (created with the port),
"peers": {NAME: "192.0.2.1", ...} (every peer, local included), "links": [[A, B], ...]
(underlay adjacency; default: full mesh), "password": null, "port": 6783,
"status_file": PATH (status JSON rewritten every 0.5 s, with "datapath": flows/peers/drops and
"written": its wall-clock time),
"vnet": true, "udp_gso": true, "big": true (big datagrams fragmented by the kernel when probes pass),
"pieces": true (speak wire version 2: big frames as UDP GSO trains of pieces to peers that speak it),
"big_frames": false (this host's bridge ports pass IPv4 super-frames over 64 KiB: take them, and
say so in heartbeats)}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time

from weave_fdp import routing
from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.forwarder import Forwarder
from weave_fdp.datapath.sleeve.sizing import PORT_GSO_MAX
from weave_fdp.errors import FdpError, UsageError


def load(path: str) -> dict:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read sleeve config {path}: {exc}", fix="pass a JSON file") from exc
    for key in ("local", "peers"):
        if key not in cfg:
            raise UsageError(f"sleeve config {path} lacks {key!r}")
    return cfg


def static_routes(local: str, names: list[str], pairs: list[list[str]]) -> tuple[dict[bytes, bytes],
                                                                                 dict[bytes, list[bytes]]]:
    """The sleeve's (unicast, broadcast) tables on the graph of ``pairs`` (links between
    ``names``), by the same BFS the mesh routes with."""
    adj: dict[str, set[str]] = {n: set() for n in names}
    for a, b in pairs:
        adj[a].add(b)
        adj[b].add(a)
    graph = {n: sorted(nb) for n, nb in adj.items()}
    b = wire.name_to_bytes
    unicast = {b(d): b(h) for d, h in routing.unicast_routes(graph, local).items()}
    broadcast = {b(s): [b(h) for h in routing.broadcast_next_hops(graph, local, s)] for s in sorted(graph)}
    return unicast, broadcast


def build(cfg: dict) -> Forwarder:
    local = cfg["local"]
    names = sorted(cfg["peers"])
    pairs = cfg.get("links") or [[a, b] for a in names for b in names if a < b]
    password = cfg.get("password")
    secret = hashlib.sha256(password.encode()).digest() if password else None
    port = int(cfg.get("port", wire.PORT))
    fw = Forwarder(wire.name_to_bytes(local), cfg.get("ifname", "vethwe-pcap"), port=port,
                   secret_for=lambda peer: secret, link_mtu=int(cfg.get("link_mtu", 1500)),
                   vnet=bool(cfg.get("vnet", True)), udp_gso=bool(cfg.get("udp_gso", True)),
                   big=bool(cfg.get("big", True)), pieces=bool(cfg.get("pieces", True)))
    b = wire.name_to_bytes
    fw.big_frames = bool(cfg.get("big_frames", False))
    fw.set_peers({b(n): (cfg["peers"][n], port) for pair in pairs if local in pair for n in pair if n != local})
    fw.set_routes(*static_routes(local, names, pairs))
    return fw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("SLEEVE_LOG", "INFO"), format="%(asctime)s %(message)s")
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        cfg = load(argv[0])
        if cfg.get("bridge"):
            from weave_fdp.plumbing.sleeve_port import ensure_sleeve_port
            ensure_sleeve_port(None, bridge=cfg["bridge"], gso_ipv4_max_size=PORT_GSO_MAX)
        fw = build(cfg)
        fw.start()
    except FdpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    status_file = cfg.get("status_file")
    while not stop.is_set():
        if status_file:
            tmp = status_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({**fw.status(), "datapath": fw.datapath_report(), "written": time.time()}, f)
            os.replace(tmp, status_file)
        stop.wait(0.5)
    fw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
