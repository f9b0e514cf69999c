"""IPAM's wire messages and persistence file: round trips, and garbage refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.errors import ProtocolError
from weave_fdp.router.ipam import persist, wire
from weave_fdp.router.ipam.allocator import Allocator, Mode
from weave_fdp.router.ipam.paxos import Claims
from weave_fdp.router.ipam.ring import Ring, RingConflict
from weave_fdp.router.ipam.sim import Cluster, sim_name

pytestmark = pytest.mark.unit

RANGE = (0x0A200000, 0x0A300000)


def test_state_round_trip() -> None:
    s = wire.State(RANGE, (sim_name(1), sim_name(2)), [(RANGE[0], sim_name(1), 3, 10), (RANGE[0] + 9, sim_name(2), 1, 2)],
                   {sim_name(1): Claims((2, sim_name(1)), (2, sim_name(1)), (sim_name(1), sim_name(2)))}, True, [RANGE[0] + 5])
    kind, body = wire.decode(wire.encode("s", s=s))
    assert kind == "s" and body["s"] == s


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_refused_never_crashes(data: bytes) -> None:
    try:
        wire.decode(data)
    except ProtocolError:
        pass


def test_unknown_version_is_refused_with_the_fix() -> None:
    import msgpack

    with pytest.raises(ProtocolError, match="version 2 is not 1; upgrade"):
        wire.decode(msgpack.packb({"v": 2, "k": "s"}))


def test_persistence_round_trip_and_corruption() -> None:
    c = Cluster(3)
    c.allocate(c.names[0], "web")
    raw = c.saved[c.names[0]]
    a = Allocator(c.names[0], RANGE, Mode("consensus", 2))
    a.restore(persist.decode(raw))
    assert a.allocs == c.peers[c.names[0]].allocs and a.ring.as_list() == c.peers[c.names[0]].ring.as_list()
    for bad, why in [(raw[:-3], "checksum"), (raw[:5], "truncated"), (b"XXXXXX" + raw[6:], "not an IPAM"),
                     (raw[:20] + bytes([raw[20] ^ 1]) + raw[21:], "checksum")]:
        with pytest.raises(persist.CorruptState, match=why) as ei:
            persist.decode(bad, "/var/lib/x/ipam.bin")
        assert "/var/lib/x/ipam.bin" in str(ei.value) and "rm " in str(ei.value)


def test_rings_founded_apart_do_not_merge() -> None:
    a, b = Ring(RANGE), Ring(RANGE)
    a.found([sim_name(1)])
    b.found([sim_name(2)])
    with pytest.raises(RingConflict, match="formed apart"):
        a.merge(sim_name(1), b.seeds, b.as_list())


def test_a_different_range_is_refused_naming_both() -> None:
    a = Ring(RANGE)
    with pytest.raises(RingConflict, match="same --ipalloc-range"):
        a.check_compatible((RANGE[0], RANGE[1] - 256), ())


def test_ipalloc_flags() -> None:
    from weave_fdp.errors import UsageError
    from weave_fdp.router.config import RouterConfig, parse_ipalloc_init

    assert parse_ipalloc_init(None, 2) == Mode("consensus", quorum=2)
    assert parse_ipalloc_init("consensus=5", 0) == Mode("consensus", quorum=3)
    assert parse_ipalloc_init("seed=::2,::1", 0).seeds == ("00:00:00:00:00:01", "00:00:00:00:00:02")
    assert parse_ipalloc_init("observer", 3).kind == "observer"
    for bad in ("seed=", "seed=zz", "consensus=0", "paxos"):
        with pytest.raises(UsageError):
            parse_ipalloc_init(bad, 0)
    assert RouterConfig(ipalloc_range="").validate().ipam_settings() is None
    for rng, sub, why in [("10.32.0.0/33", None, "not an IPv4 CIDR"), ("10.0.0.1/32", None, "no address"),
                          ("10.32.0.0/12", "192.168.0.0/16", "does not overlap")]:
        with pytest.raises(UsageError, match=why):
            RouterConfig(ipalloc_range=rng, ipalloc_default_subnet=sub).validate()


def test_attach_grammar() -> None:
    from weave_fdp.errors import UsageError
    from weave_fdp.router.containers import AddrSpec, parse_specs

    assert parse_specs(["10.32.1.1/12", "ip:10.32.1.2/12", "net:10.32.5.9/24", "net:default"]) == [
        AddrSpec("ip", "10.32.1.1/12"), AddrSpec("ip", "10.32.1.2/12"), AddrSpec("net", "10.32.5.0/24"),
        AddrSpec("net", None)]
    for bad, why in [("net:10.32.0.0/31", "no address for a host"), ("net:10.32.0.0", "prefix length"),
                     ("net:nope", "bad subnet"), ("10.32.1.1", "prefix length"), ("ip:10.32.1.300/12", "bad address")]:
        with pytest.raises(UsageError, match=why):
            parse_specs([bad])


def test_status_ipam_lines_in_weaves_shape() -> None:
    from weave_fdp.cli.status_format import ipam_lines, ipam_rows

    st = {"status": "ready", "range": "10.32.0.0/12", "default_subnet": "10.32.0.0/12", "conflicts": [],
          "entries": [{"name": sim_name(1), "nickname": "h1", "size": 349526, "share": 33.33, "free": 349523,
                       "active": 3, "reachable": True},
                      {"name": sim_name(2), "nickname": "h2", "size": 349525, "share": 33.33, "free": 349525,
                       "active": None, "reachable": False}]}
    lines = ipam_lines(st)
    assert lines[0].startswith(f"{sim_name(1)}(h1)") and "349526 IPs (33.3% of total) (3 active, 349523 available)" in lines[0]
    assert lines[1].endswith("(349525 available) - unreachable!")
    assert ("DefaultSubnet", "10.32.0.0/12") in ipam_rows(st)
