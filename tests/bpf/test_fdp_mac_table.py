"""The MAC table under pressure: learned MACs never crowd out local ones, a peer's
learning is capped, a full map is a clear error (exit code 1) rather than a kernel
feature missing."""

from __future__ import annotations

import ctypes

import pytest

from tests.bpf.fdp_helpers import eth, ipv4, learn, tunnel_ctx, udp
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import build_plan
from weave_fdp.errors import CapacityFull, ExitCode

REDIRECT = 7
LOCAL_A, LOCAL_NEW = "02:00:00:00:01:0a", "02:00:00:00:01:0c"
IP2 = "192.0.2.2"


def plan_with(ports: dict[str, str]):
    return build_plan(local="p1", short_ids={"p1": 1, "p2": 2, "p3": 3}, unicast={"p2": "p2", "p3": "p3"},
                      broadcast={}, hop_ips={"p2": IP2, "p3": "192.0.2.3"},
                      modes={"p2": "fastdp", "p3": "fastdp"}, ports=ports, mtu=1450)


@pytest.fixture
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    d.apply(plan_with({"vethweplA": LOCAL_A}), vxlan_ifindex=100, ifindex={"vethweplA": 11, "vethweplC": 13})
    yield d
    d.close()


def receive(dp, src_mac: str, peer: int = 2) -> int:
    frame = eth(LOCAL_A, src_mac, 0x0800) + ipv4("10.32.2.9", "10.32.1.1", 17, udp(1, 2))
    ip = IP2 if peer == 2 else "192.0.2.3"
    return bpf_syscall.prog_test_run(dp.prog_fd("fdp_from_tunnel"), frame,
                                     ctx_in=tunnel_ctx(abi.vni(peer, 1), ip)).retval


def mac(i: int) -> str:
    return "0a:%02x:%02x:%02x:%02x:%02x" % (i >> 32 & 0xFF, i >> 24 & 0xFF, i >> 16 & 0xFF, i >> 8 & 0xFF, i & 0xFF)


def count(dp, peer: int) -> int:
    return dp.maps["fdp_learn_count"].get(ctypes.c_uint32(peer)).value


def test_a_full_learned_table_never_blocks_a_local_container(dp) -> None:
    for i in range(abi.MAX_MACS + 100):             # more than the table holds: the LRU evicts
        learn(dp, mac(i), 3)
    assert len(list(dp.maps["fdp_learned"].keys())) <= abi.MAX_MACS
    dp.apply(plan_with({"vethweplA": LOCAL_A, "vethweplC": LOCAL_NEW}), vxlan_ifindex=100,
             ifindex={"vethweplA": 11, "vethweplC": 13})
    e = dp.maps["fdp_macs"].get(abi.mac_key(LOCAL_NEW))
    assert e is not None and e.flags == abi.MacFlags.LOCAL and e.ifindex == 13
    assert receive(dp, "02:00:00:00:02:77") == REDIRECT     # and learning goes on
    assert dp.maps["fdp_learned"].get(abi.mac_key("02:00:00:00:02:77")).peer == 2


def test_a_peer_at_its_cap_teaches_no_more_macs(dp) -> None:
    for i in range(5):
        assert receive(dp, mac(i)) == REDIRECT
    assert count(dp, 2) == 5
    dp.maps["fdp_learn_count"].set(ctypes.c_uint32(2), ctypes.c_uint32(abi.MAX_MACS_PER_PEER))
    before = dp.drops().get("learn-limit", 0)
    assert receive(dp, mac(99)) == REDIRECT                 # delivered, not learned
    assert dp.maps["fdp_learned"].get(abi.mac_key(mac(99))) is None
    assert dp.drops().get("learn-limit", 0) == before + 1
    assert receive(dp, mac(1)) == REDIRECT                  # known MACs stay known
    assert dp.maps["fdp_learned"].get(abi.mac_key(mac(1))) is not None
    assert receive(dp, mac(50), peer=3) == REDIRECT         # other peers unaffected
    assert dp.maps["fdp_learned"].get(abi.mac_key(mac(50))).peer == 3
    # the sweep recounts exactly, and learning resumes
    assert dp.recount_learned() == {2: 5, 3: 1}
    assert count(dp, 2) == 5
    assert receive(dp, mac(99)) == REDIRECT
    assert dp.maps["fdp_learned"].get(abi.mac_key(mac(99))).peer == 2


def test_a_full_map_is_a_capacity_error_with_exit_code_1() -> None:
    from weave_fdp.datapath.fastdp.maps import BpfMap

    fd = bpf_syscall.map_create(1, ctypes.sizeof(abi.MacKey), ctypes.sizeof(abi.MacEntry), 1)   # BPF_MAP_TYPE_HASH
    m = BpfMap(fd, "tiny", abi.MacKey, abi.MacEntry, owned=True)
    try:
        m.set(abi.mac_key(LOCAL_A), abi.MacEntry())
        with pytest.raises(CapacityFull) as ei:
            m.set(abi.mac_key(LOCAL_NEW), abi.MacEntry())
        assert "BPF map tiny is full (1 entries)" in str(ei.value)
        assert ei.value.exit_code == ExitCode.FAILURE
    finally:
        m.close()
