"""Flow counters in per-CPU slots in front of fdp_flows: exact whichever map holds a flow.

The programs are built with one slot (FDP_FLOW_SLOTS=1) so every flow collides:
with an idle time no run reaches, the first flow keeps the slot and the others go
to fdp_flows; with an idle time of 0, every collision moves the resident's counts
to fdp_flows and takes the slot. Either way each flow's packets and bytes, summed
by ``FastDatapath.flows``, are what the programs were given (BPF_PROG_TEST_RUN).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bpf.fdp_helpers import allow_port, eth, ipv4, learn, run, udp
from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.plan import build_plan

REDIRECT = 7
ME, PEER = "02:00:00:00:01:0a", "02:00:00:00:02:01"
SRC_IP = "10.32.0.1"
NEVER = 10**18      # ns: no slot ever idles this long in a test
TX = "fdp_from_container"


def load(idle_ns: int):
    from weave_fdp.datapath.fastdp.loader import FastDatapath

    d = FastDatapath(test_mode=True, defines={"FDP_FLOW_SLOTS": 1, "FDP_FLOW_SLOT_IDLE_NS": idle_ns}).load()
    plan = build_plan(local="p1", short_ids={"p1": 1, "p2": 2}, unicast={"p2": "p2"}, broadcast={"p1": ["p2"]},
                      hop_ips={"p2": "192.0.2.2"}, modes={"p2": "fastdp"}, ports={"vethweplA": ME}, mtu=1450)
    d.apply(plan, vxlan_ifindex=100, ifindex={"vethweplA": 11})
    learn(d, PEER, 2)
    allow_port(d, ME, [SRC_IP])
    return d


@pytest.fixture(scope="module", autouse=True)
def one_cpu() -> Iterator[None]:
    """Test runs execute on the calling CPU, and each CPU has its own slot: stay on one."""
    was = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(was)})
    yield
    os.sched_setaffinity(0, was)


@pytest.fixture(scope="module")
def keeping() -> Iterator:
    d = load(NEVER)
    yield d
    d.close()


@pytest.fixture(scope="module")
def evicting() -> Iterator:
    d = load(0)
    yield d
    d.close()


def frame(flow: int, size: int) -> bytes:
    return eth(PEER, ME, 0x0800) + ipv4(SRC_IP, "10.32.0.2", 17, udp(1000 + flow, 53, b"x" * size))


def reset(d) -> None:
    d.maps["fdp_flows"].clear()
    d.maps["fdp_flow_slots"].set(ctypes.c_uint32(0), abi.FlowSlot())   # every CPU's copy


def counted(d) -> dict[int, tuple[int, int]]:
    return {f["sport"] - 1000: (f["packets"], f["bytes"]) for f in d.flows({2: "p2"}) if f["src_ip"] == SRC_IP}


def send(d, flows: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    want: dict[int, tuple[int, int]] = {}
    for flow, size in flows:
        fr = frame(flow, size)
        assert run(d, TX, fr)[0].retval == REDIRECT
        p, b = want.get(flow, (0, 0))
        want[flow] = (p + 1, b + len(fr))
    return want


def where(d) -> tuple[list[int], list[int]]:
    """(flows in the slot, flows in fdp_flows) by source port - 1000."""
    slot = [s.key.sport for s in d.maps["fdp_flow_slots"].get_percpu(ctypes.c_uint32(0)) or [] if s.st.packets]
    table = [k.sport for k in d.maps["fdp_flows"].keys()]
    port = lambda be: abi.be16_to_int(be) - 1000  # noqa: E731
    return sorted(map(port, slot)), sorted(map(port, table))


def test_the_first_flow_keeps_its_slot_the_others_count_in_the_table(keeping) -> None:
    reset(keeping)
    want = send(keeping, [(1, 10), (1, 20), (2, 30), (1, 40), (3, 50), (2, 60)])
    assert counted(keeping) == want
    assert where(keeping) == ([1], [2, 3])


def test_an_idle_slot_goes_to_the_next_flow_and_its_counts_to_the_table(evicting) -> None:
    reset(evicting)
    want = send(evicting, [(1, 10), (1, 20), (2, 30), (1, 40)])
    assert counted(evicting) == want     # flow 1: 2 in the table, 1 in the slot
    assert where(evicting) == ([1], [1, 2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 200)), min_size=1, max_size=30), st.booleans())
def test_counts_are_exact_whichever_map_holds_a_flow(keeping, evicting, flows, evict) -> None:
    d = evicting if evict else keeping
    reset(d)
    want = send(d, flows)
    assert counted(d) == want
