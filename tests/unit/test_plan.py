"""datapath.plan: which map entries should exist, computed without the kernel."""

from __future__ import annotations

import pytest

from weave_fdp.datapath.plan import build_plan, diff_macs, diff_slots
from weave_fdp.errors import DatapathError

LINE = dict(local="h2", short_ids={"h1": 1, "h2": 2, "h3": 3},
            unicast={"h1": "h1", "h3": "h3"}, broadcast={"h1": ["h3"], "h2": ["h1", "h3"], "h3": ["h1"]},
            hop_ips={"h1": "192.0.2.1", "h3": "192.0.2.3"}, modes={"h1": "fastdp", "h3": "sleeve"},
            ports={"vethwepl1": "02:AA:00:00:00:01"})


def test_line_middle_peer() -> None:
    p = build_plan(**LINE)
    assert p.local_short_id == 2
    assert p.peers[1].nexthop_ip == "192.0.2.1" and p.peers[1].mode == "fastdp"
    assert p.peers[3].mode == "sleeve"
    assert [h.short_id for h in p.bcast[2]] == [1, 3]
    assert [h.short_id for h in p.bcast[1]] == [3]
    assert p.ports[0].mac == "02:aa:00:00:00:01"  # normalized
    assert p.names == {1: "h1", 2: "h2", 3: "h3"}


def test_relayed_peer_uses_the_next_hop_address() -> None:
    p = build_plan(local="h1", short_ids={"h1": 1, "h2": 2, "h3": 3}, unicast={"h2": "h2", "h3": "h2"},
                   broadcast={}, hop_ips={"h2": "192.0.2.2"}, modes={"h2": "fastdp"})
    assert (p.peers[3].nexthop_short_id, p.peers[3].nexthop_ip, p.peers[3].mode) == (2, "192.0.2.2", "fastdp")


def test_unreachable_peer_is_known_with_mode_none() -> None:
    p = build_plan(local="h1", short_ids={"h1": 1, "h9": 9}, unicast={}, broadcast={}, hop_ips={}, modes={})
    assert p.peers[9].mode == "none"


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(DatapathError, match="short ID"):
        build_plan(**{**LINE, "short_ids": {"h1": 1, "h2": 5000, "h3": 3}})
    with pytest.raises(DatapathError, match="no short ID"):
        build_plan(**{**LINE, "local": "hX"})
    with pytest.raises(DatapathError, match="MAC"):
        build_plan(**{**LINE, "ports": {"v": "zz"}})
    with pytest.raises(DatapathError, match="underlay address"):
        build_plan(**{**LINE, "hop_ips": {"h1": "nope", "h3": "192.0.2.3"}})
    with pytest.raises(DatapathError, match="mode"):
        build_plan(**{**LINE, "modes": {"h1": "warp"}})


def test_diff_macs_keeps_learned_of_known_peers_and_drops_the_rest() -> None:
    p = build_plan(**LINE)
    cur = {"02:aa:00:00:00:01": (2, True), "02:aa:00:00:00:09": (2, True),
           "02:00:00:00:00:01": (1, False), "02:00:00:00:00:07": (7, False)}
    d = diff_macs(cur, p)
    assert d.upsert == {"02:aa:00:00:00:01": "vethwepl1"}
    assert d.delete == ["02:00:00:00:00:07", "02:aa:00:00:00:09"]


def test_diff_slots() -> None:
    assert diff_slots({1, 2, 3}, {2, 4}) == ({2, 4}, {1, 3})


def test_direct_hops_are_the_fastdp_next_hops_only() -> None:
    from weave_fdp.datapath.plan import direct_hops

    # h1 direct (fastdp), h3 direct (sleeve), h4 behind h1, h5 known but unreachable
    p = build_plan(local="h2", short_ids={"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5},
                   unicast={"h1": "h1", "h3": "h3", "h4": "h1"}, broadcast={},
                   hop_ips={"h1": "192.0.2.1", "h3": "192.0.2.3"}, modes={"h1": "fastdp", "h3": "sleeve"})
    assert direct_hops(p) == {1: "192.0.2.1"}


def test_neighbours_are_keyed_by_address_with_mode_and_sealing() -> None:
    from weave_fdp.datapath.plan import Neighbour

    plan = build_plan(local="a", short_ids={"a": 1, "b": 2, "c": 3, "d": 4, "e": 5},
                      unicast={"b": "b", "c": "c", "d": "d", "e": "b"}, broadcast={},
                      hop_ips={"b": "192.0.2.2", "c": "192.0.2.3", "d": "192.0.2.2"},
                      modes={"b": "fastdp", "c": "sleeve"}, sealed={"c", "d"}, xfrm={"d"})
    # e is behind b: not a neighbour; d claims b's address: the lower short ID keeps it
    assert plan.neighbours == {"192.0.2.2": Neighbour(2, "192.0.2.2", "fastdp"),
                               "192.0.2.3": Neighbour(3, "192.0.2.3", "sleeve", sealed=True)}
    with pytest.raises(DatapathError):
        build_plan(local="a", short_ids={"a": 1, "b": 2}, unicast={}, broadcast={},
                   hop_ips={"b": "192.0.2.2"}, modes={"b": "warp"})


def test_host_port_is_the_bridge_mac_and_its_ipv4_addresses() -> None:
    from weave_fdp.datapath.plan import MAX_PORT_IPS, host_port

    h = host_port("weave", "02:AA:00:00:00:BE", ["169.254.53.53/32", "10.32.0.100/12", "fe80::1/64",
                                                  "10.32.0.9/12"])
    assert (h.ifname, h.mac, h.ips) == ("weave", "02:aa:00:00:00:be", ("10.32.0.9", "10.32.0.100", "169.254.53.53"))
    many = host_port("weave", "02:aa:00:00:00:be", [f"10.32.0.{i}/12" for i in range(20, 10, -1)])
    assert many.ips == tuple(f"10.32.0.{i}" for i in range(11, 11 + MAX_PORT_IPS))   # the lowest kept


def test_host_port_is_planned_and_its_mac_kept_local() -> None:
    from weave_fdp.datapath.plan import host_port

    h = host_port("weave", "02:aa:00:00:00:be", ["10.32.0.100/12"])
    p = build_plan(**LINE, host=h)
    assert p.host == h and [x.ifname for x in p.ports] == ["vethwepl1"]
    d = diff_macs({"02:aa:00:00:00:be": (2, True), "02:aa:00:00:00:01": (2, True)}, p)
    assert d.delete == [] and d.upsert == {"02:aa:00:00:00:01": "vethwepl1", "02:aa:00:00:00:be": "weave"}
    gone = diff_macs({"02:aa:00:00:00:be": (2, True)}, build_plan(**LINE))   # the router stopped: it leaves
    assert gone.delete == ["02:aa:00:00:00:be"]


def test_one_port_is_the_hosts_so_containers_are_one_fewer() -> None:
    from weave_fdp.datapath.plan import MAX_CONTAINERS, MAX_LOCAL_PORTS, local_ports
    from weave_fdp.errors import CapacityFull

    assert MAX_CONTAINERS == MAX_LOCAL_PORTS - 1
    ports = {f"vethwepl{i}": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(MAX_CONTAINERS + 1)}
    assert len(local_ports(dict(list(ports.items())[:MAX_CONTAINERS]), {})) == MAX_CONTAINERS
    with pytest.raises(CapacityFull, match=f"at most {MAX_CONTAINERS}"):
        local_ports(ports, {})
