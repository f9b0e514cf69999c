"""Sleeve flow and peer counters: keys, exact counts, bounds, merge into report["datapath"]."""

from __future__ import annotations

import struct

from weave_fdp.datapath.sleeve import wire
from weave_fdp.datapath.sleeve.flows import FlowTable, PeerCounters, decode_key, flow_key, merge_datapath, peer_rows

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
HOP = wire.name_to_bytes("7e:00:00:00:00:02")


def ipv4(proto: int, sport: int = 0, dport: int = 0, payload: bytes = b"x" * 20, frag_off: int = 0) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, frag_off, 64, proto, 0,
                     bytes([10, 32, 1, 1]), bytes([10, 32, 2, 1]))
    l4 = struct.pack("!HHI", sport, dport, 0x12345678) if proto in (6, 17) else struct.pack("!BBHI", 8, 0, 0xBEEF, 7)
    return B + A + b"\x08\x00" + ip + l4 + payload


def test_key_decodes_to_fastdp_fields() -> None:
    d = decode_key(flow_key(ipv4(6, 40000, 5201), 0))
    assert d == {"src_mac": "02:00:00:00:00:01", "dst_mac": "02:00:00:00:00:02", "src_ip": "10.32.1.1",
                 "dst_ip": "10.32.2.1", "proto": 6, "sport": 40000, "dport": 5201, "ethertype": 0x0800}
    # ICMP and non-first fragments carry no ports; ARP/IPv6 only MACs and ethertype.
    assert decode_key(flow_key(ipv4(1), 0))["sport"] is None
    assert decode_key(flow_key(ipv4(17, 1, 2, frag_off=100), 0))["dport"] is None
    arp = B + A + b"\x08\x06" + bytes(28)
    assert decode_key(flow_key(arp, 0))["src_ip"] is None
    # The vnet header offset is honoured, memoryviews work.
    assert flow_key(memoryview(bytes(10) + ipv4(6, 1, 2)), 10) == flow_key(ipv4(6, 1, 2), 0)


def test_counts_are_exact_per_flow() -> None:
    t = FlowTable()
    ping = ipv4(1)
    for i in range(7):
        t.add(ping, 0, len(ping), float(i), HOP)      # ICMP: one flow whatever the checksum/sequence
    t.add(ipv4(6, 1, 2), 0, 100, 8.0, HOP)
    rows = {r["proto"]: r for r in t.snapshot("tx", wire.bytes_to_name, now=8.0)}
    assert rows[1]["packets"] == 7 and rows[1]["bytes"] == 7 * len(ping)
    assert rows[1]["path"] == "sleeve" and rows[1]["via"] == "7e:00:00:00:00:02" and rows[1]["dir"] == "tx"
    assert rows[6]["packets"] == 1 and rows[6]["bytes"] == 100


def test_table_is_bounded_and_ages_out() -> None:
    t = FlowTable(max_flows=10, idle=5.0)
    for port in range(1, 26):
        t.add(ipv4(17, port, 53), 0, 64, float(port) / 10, HOP)
    assert len(t) <= 20                          # hard cap between aging passes: 2 x max
    t.maybe_age(3.0)
    assert len(t) == 10                          # trimmed to the most recently seen
    assert {r["sport"] for r in t.snapshot("tx", str, now=3.0)} == set(range(16, 26))
    t.maybe_age(10.0)
    assert len(t) == 0 and t.evicted == 25


def test_peer_rows_and_merge_with_fastdp() -> None:
    tx, rx = PeerCounters(), PeerCounters()
    for _ in range(3):
        tx.add(HOP, 100)
    rx.add(HOP, 50)
    rows = peer_rows(tx, rx, wire.bytes_to_name)
    assert rows == [{"peer": "7e:00:00:00:00:02", "tx_packets": 3, "tx_bytes": 300, "rx_packets": 1,
                     "rx_bytes": 50, "path": "sleeve"}]
    flow = {"src_mac": "a", "dst_mac": "b", "src_ip": "1", "dst_ip": "2", "proto": 1, "sport": None,
            "dport": None, "packets": 3, "bytes": 300, "path": "sleeve", "via": "x"}
    fast = {"flows": [dict(flow, packets=2), dict(flow, src_ip="9", path="tx")],
            "peers": [{"peer": "p", "tx_packets": 1}], "drops": {"no route": 1}, "entries": {"fdp_macs": 2}}
    m = merge_datapath(fast, {"flows": [flow], "peers": rows, "drops": {"replay": 2}})
    assert sorted((f["src_ip"], f["path"], f["packets"]) for f in m["flows"]) == [("1", "sleeve", 3), ("9", "tx", 3)]
    assert len(m["peers"]) == 2 and m["drops"] == {"no route": 1, "sleeve-replay": 2}
    assert m["entries"] == {"fdp_macs": 2}
    assert merge_datapath(None, {"flows": [], "peers": [], "drops": {}}) == {"flows": [], "peers": [], "drops": {}}
