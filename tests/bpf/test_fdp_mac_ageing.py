"""MAC ageing: the programs refresh a learned entry's last-seen time (at most once per
FDP_MAC_REFRESH_NS) and the sweep (FastDatapath.age_macs) removes entries unseen for the
ageing time, never local ones. Real time, ageing 2 s: the module takes ~2.5 s."""

from __future__ import annotations

import time

import pytest

from tests.bpf.fdp_helpers import eth, ipv4, tunnel_ctx, udp
from weave_fdp.datapath import bpf_syscall
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import build_plan

REDIRECT = 7
LOCAL_MAC = "02:00:00:00:01:0a"
IDLE_MAC, ACTIVE_MAC = "02:00:00:00:02:a1", "02:00:00:00:02:a2"
AGEING_S = 2.0
TICK_NS = 20_000_000   # bpf_ktime_get_coarse_ns lags the monotonic clock by at most a tick (≤ 10 ms)


@pytest.fixture
def dp():
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True).load()
    plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"},
                      broadcast={"p1": ["p2"]}, hop_ips={"p2": "192.0.2.2"}, modes={"p2": "fastdp"},
                      ports={"vethweplA": LOCAL_MAC}, mtu=1450)
    d.apply(plan, vxlan_ifindex=100, ifindex={"vethweplA": 11})
    yield d
    d.close()


def receive_from(dp, src_mac: str) -> None:
    """A unicast frame from ``src_mac`` on peer 2 to the local container (fdp_from_tunnel)."""
    frame = eth(LOCAL_MAC, src_mac, 0x0800) + ipv4("10.32.0.2", "10.32.0.1", 17, udp(1, 2))
    res = bpf_syscall.prog_test_run(dp.prog_fd("fdp_from_tunnel"), frame,
                                    ctx_in=tunnel_ctx(abi.vni(2, 1), "192.0.2.2"))
    assert res.retval == REDIRECT


def seen(dp, mac: str) -> int | None:
    e = dp.maps["fdp_learned"].get(abi.mac_key(mac))
    return None if e is None else e.updated_ns


def test_learned_entry_is_stamped_and_refreshed_at_most_once_per_second(dp) -> None:
    before = time.monotonic_ns()
    receive_from(dp, ACTIVE_MAC)
    first = seen(dp, ACTIVE_MAC)
    assert first is not None and before - TICK_NS <= first <= time.monotonic_ns()
    receive_from(dp, ACTIVE_MAC)            # within the refresh period: no write
    assert seen(dp, ACTIVE_MAC) == first
    time.sleep(abi.MAC_REFRESH_NS / 1e9 + 0.05)
    receive_from(dp, ACTIVE_MAC)            # past it: refreshed
    assert seen(dp, ACTIVE_MAC) >= first + abi.MAC_REFRESH_NS


def test_idle_entry_ages_out_active_and_local_entries_stay(dp) -> None:
    receive_from(dp, IDLE_MAC)
    receive_from(dp, ACTIVE_MAC)
    t0 = time.monotonic()
    assert dp.age_macs(AGEING_S) == []      # nothing is old yet
    deadline = t0 + AGEING_S + 0.2
    while time.monotonic() < deadline:      # ACTIVE_MAC keeps talking, IDLE_MAC does not
        time.sleep(0.25)
        receive_from(dp, ACTIVE_MAC)
    removed = dp.age_macs(AGEING_S)
    assert removed == [IDLE_MAC]
    assert seen(dp, IDLE_MAC) is None
    assert seen(dp, ACTIVE_MAC) is not None
    local = dp.maps["fdp_macs"].get(abi.mac_key(LOCAL_MAC))
    assert local is not None and local.flags == abi.MacFlags.LOCAL and local.ifindex == 11
    # an aged-out MAC is learned again by its next frame
    receive_from(dp, IDLE_MAC)
    e = dp.maps["fdp_learned"].get(abi.mac_key(IDLE_MAC))
    assert e is not None and e.peer == 2 and e.flags == abi.MacFlags.LEARNED


def test_sweep_with_an_explicit_clock(dp) -> None:
    receive_from(dp, IDLE_MAC)
    stamp = seen(dp, IDLE_MAC)
    assert dp.age_macs(AGEING_S, now_ns=stamp + int(AGEING_S * 1e9)) == []       # exactly the age: stays
    assert dp.age_macs(AGEING_S, now_ns=stamp + int(AGEING_S * 1e9) + 1) == [IDLE_MAC]
    assert dp.mac_entries() == []           # learned entries only: local ones never age
