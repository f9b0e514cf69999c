"""IPAM as a whole, in-process (weave_fdp/router/ipam/sim.py): random allocations, frees,
partitions, heals, crashes and restarts of 3-20 peers; the invariants that matter to users."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from weave_fdp.errors import FdpError
from weave_fdp.router.ipam.allocator import Mode, Pending
from weave_fdp.router.ipam.sim import Cluster

pytestmark = pytest.mark.unit

SMALL = (0x0A000000, 0x0A000040)   # 64 addresses: exhaustion and donation happen often


def live_allocations(c: Cluster) -> dict[int, list[tuple[str, str]]]:
    """address -> [(peer, ident)] over live peers and what crashed peers persisted."""
    from weave_fdp.router.ipam import persist

    out: dict[int, list[tuple[str, str]]] = {}
    for name in c.names:
        if name in c.peers:
            allocs = c.peers[name].allocs
        elif name in c.saved:
            allocs = {int(a): i for a, i in persist.decode(c.saved[name])["allocs"].items()}
        else:
            continue
        for a, ident in allocs.items():
            out.setdefault(a, []).append((name, ident))
    return out


class IpamCluster(RuleBasedStateMachine):
    @initialize(n=st.integers(3, 20), seed=st.integers(0, 2**16))
    def setup(self, n: int, seed: int) -> None:
        self.c = Cluster(n, SMALL, seed=seed)
        self.held: dict[str, tuple[str, int]] = {}   # ident -> (peer, address)
        self.next = 0

    @rule(data=st.data())
    def allocate(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.c.alive()))
        ident = f"c{self.next}"
        self.next += 1
        try:
            res = self.c.allocate(name, ident, max_steps=20)
        except FdpError:
            return   # full: a clear error, nothing allocated
        if isinstance(res, int):
            self.held[ident] = (name, res)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(sorted(self.held)))
        name, _ = self.held[ident]
        if name in self.c.peers:
            self.c.peers[name].release(ident)
            self.c._flush(name)
            del self.held[ident]

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        names = list(self.c.names)
        cut = data.draw(st.integers(1, len(names) - 1))
        perm = data.draw(st.permutations(names))
        self.c.partition([list(perm[:cut]), list(perm[cut:])])

    @rule()
    def heal(self) -> None:
        self.c.heal()

    @precondition(lambda self: len(self.c.alive()) > 1)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.c.crash(data.draw(st.sampled_from(self.c.alive())))

    @precondition(lambda self: len(self.c.alive()) < len(self.c.names))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        dead = [n for n in self.c.names if n not in self.c.peers]
        self.c.start(data.draw(st.sampled_from(dead)))

    @rule()
    def time_passes(self) -> None:
        self.c.gossip_round()
        self.c.step()

    @invariant()
    def never_two_targets_with_one_address(self) -> None:
        if not hasattr(self, "c"):
            return
        for a, holders in live_allocations(self.c).items():
            assert len(holders) == 1, (a, holders)

    @invariant()
    def allocations_lie_in_the_holders_space(self) -> None:
        if not hasattr(self, "c"):
            return
        for name in self.c.alive():
            p = self.c.peers[name]
            for a in p.allocs:
                assert p.ring.owner(a) == name

    @invariant()
    def no_conflicts(self) -> None:
        if hasattr(self, "c"):
            for name in self.c.alive():
                assert not self.c.peers[name].conflicts, self.c.peers[name].conflicts

    def teardown(self) -> None:
        """Heal and restart everyone: rings converge and every address is owned exactly once."""
        if not hasattr(self, "c"):
            return
        for n in self.c.names:
            if n not in self.c.peers:
                self.c.start(n)
        self.c.heal()
        self.c.settle(6)
        rings = {n: self.c.peers[n].ring.as_list() for n in self.c.names}
        founded = [r for r in rings.values() if r]
        if founded:
            assert self.c.converged(), rings
            ring = self.c.peers[self.c.names[0]].ring
            assert sum(ring.owned().values()) == SMALL[1] - SMALL[0]
            # every held address is still its holder's
            for ident, (name, a) in self.held.items():
                assert self.c.peers[name].allocs.get(a) == ident


IpamCluster.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestIpamCluster = IpamCluster.TestCase


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 9), reachable=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_consensus_iff_a_quorum_of_initial_peers_is_reachable(n: int, reachable: int, seed: int) -> None:
    reachable = min(reachable, n)
    c = Cluster(n, seed=seed)
    inside = c.names[:reachable]
    c.partition([inside] + [[x] for x in c.names[reachable:]])
    asker = inside[0]
    res = c.allocate(asker, "web", max_steps=80)
    quorum = n // 2 + 1
    if reachable >= quorum:
        assert isinstance(res, int)
    else:
        assert isinstance(res, Pending) and "awaiting consensus" in res.reason
        assert all(c.peers[x].ring.empty() for x in c.names)


def test_observer_alone_cannot_allocate_until_a_voter_joins() -> None:
    c = Cluster(2, modes={0: Mode("observer"), 1: Mode("consensus", 1)})
    obs, voter = c.names
    c.partition([[obs], [voter]])
    res = c.allocate(obs, "a", max_steps=20)
    assert isinstance(res, Pending) and "observer" in res.reason
    assert c.peers[obs].status() == "priming"
    c.heal()
    res = c.allocate(obs, "a", max_steps=40)
    assert isinstance(res, int)
    assert c.peers[voter].ring.seeds == (voter,)


def test_seed_peers_allocate_apart_then_join_without_clash() -> None:
    names = Cluster(2).names
    seeds = Mode("seed", seeds=tuple(names))
    c = Cluster(2, modes={0: seeds, 1: seeds})
    a, b = c.names
    c.partition([[a], [b]])
    got = {x: [c.allocate(x, f"{x}-{i}") for i in range(20)] for x in (a, b)}
    assert all(isinstance(v, int) for vs in got.values() for v in vs)
    assert not set(got[a]) & set(got[b])
    c.heal()
    c.settle(3)
    assert c.converged() and not any(c.peers[x].conflicts for x in (a, b))


def test_rmpeer_reclaims_a_dead_peers_space_and_refuses_a_live_one() -> None:
    c = Cluster(3)
    assert isinstance(c.allocate(c.names[0], "x"), int)
    dead = c.names[2]
    with pytest.raises(FdpError, match="reachable"):
        c.peers[c.names[0]].rmpeer(dead)
    before = c.peers[c.names[0]].ring.owned()[dead]
    c.crash(dead)
    peer, moved = c.peers[c.names[0]].rmpeer(dead)
    assert peer == dead and moved == before
    c.settle(2)
    assert dead not in c.peers[c.names[1]].ring.owned()


def test_handoff_before_leaving_keeps_every_address_owned() -> None:
    c = Cluster(3)
    for n in c.names:
        assert isinstance(c.allocate(n, "x"), int)
    leaving = c.names[1]
    to = c.peers[leaving].handoff()
    assert to is not None
    c._flush(leaving)
    c.step()
    assert c.peers[leaving].handoff_acked == to
    c.crash(leaving)
    c.settle(2)
    owned = c.peers[c.names[0]].ring.owned()
    assert leaving not in owned and sum(owned.values()) == c.range[1] - c.range[0]


def test_explicit_claims_before_consensus_are_handed_over_by_the_owner() -> None:
    c = Cluster(3, SMALL)
    a = c.names[0]
    top = SMALL[1] - 3    # will lie in the last peer's space
    assert c.peers[a].claim("fixed", top, c.now) is True       # no ring yet: held as a claim
    assert isinstance(c.allocate(a, "auto"), int)              # consensus
    c.settle(4)
    assert c.peers[a].ring.owner(top) == a and c.peers[a].allocs[top] == "fixed"
    # nobody else hands it out
    got = [c.allocate(n, f"{n}-{i}") for n in c.names[1:] for i in range(10)]
    assert top not in got


def test_cloned_identity_is_detected() -> None:
    c = Cluster(2)
    assert isinstance(c.allocate(c.names[0], "x"), int)
    c.settle(2)
    # a copy of peer 0's state runs elsewhere and changes its ring (a donation)
    from weave_fdp.router.ipam import persist
    from weave_fdp.router.ipam.allocator import Allocator

    clone = Allocator(c.names[0], c.range, c.modes[c.names[0]])
    clone.restore(persist.decode(c.saved[c.names[0]]))
    clone.set_peers({c.names[1]}, {})
    lo, hi = clone.ring.ranges_of(clone.me)[0]
    clone._give(hi - 10, hi, c.names[1])
    # ... while the original changed the same entries its own way
    c.peers[c.names[0]]._give(hi - 20, hi, c.names[1])
    c.peers[c.names[0]].on_message(c.names[1], clone.gossip(), c.now)
    assert c.names[1] in c.peers[c.names[0]].conflicts
    assert "state" in c.peers[c.names[0]].conflicts[c.names[1]]
