"""The pure parts of `bench sleeve-bound`: the null forwarder's framing (frames cut into
pieces and joined again, as both its Python and C forms do), and the result arithmetic
(paired ratios, per-GB costs, the table)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weave_fdp.bench import bound_results as br
from weave_fdp.bench.null_forwarder import HEAD, Joiner, split, train_chunks, train_layout, whole_train
from weave_fdp.bench.sleeve_bound import Options
from weave_fdp.datapath.sleeve.sizing import GSO_MAX_BYTES, GSO_MAX_SEGS
from weave_fdp.errors import UsageError

SEG = 1472


# ---------------------------------------------------------------- framing

@given(st.integers(1, 70000), st.integers(64, SEG))
def test_a_frame_leaves_in_trains_the_kernel_takes_and_covers_every_byte(total: int, seg: int) -> None:
    layout = train_layout(total, seg)
    chunk = seg - HEAD.size
    assert layout[0][0] == 0
    covered = 0
    for first, k in layout:
        assert first == covered
        assert 1 <= k <= GSO_MAX_SEGS and k * seg <= GSO_MAX_BYTES
        covered = min(total, first + k * chunk)
    assert covered == total


@given(st.binary(min_size=1, max_size=70000), st.integers(64, SEG))
def test_the_pieces_of_a_frame_join_back_to_it(frame: bytes, seg: int) -> None:
    dgs = split(frame, seg)
    assert all(len(d) == seg for d in dgs[:-1]) and len(dgs[-1]) <= seg
    # one read of the whole train (what UDP GRO hands over): the fast path
    read = b"".join(dgs)
    total, off = HEAD.unpack_from(read)
    assert whole_train(len(read), seg, total, off)
    assert b"".join(train_chunks(memoryview(read), len(read), seg)) == frame
    # piece by piece (ACKs coalesced by GRO, a train split across reads)
    j = Joiner()
    out = [j.add(d) for d in dgs]
    assert out[:-1] == [None] * (len(dgs) - 1) and bytes(out[-1]) == frame


def test_whole_train_refuses_reads_that_are_not_exactly_one_train() -> None:
    frame = bytes(range(256)) * 200                          # 51,200 bytes: 35 pieces
    dgs = split(frame, SEG)
    read = b"".join(dgs)
    assert whole_train(len(read), SEG, len(frame), 0)
    assert not whole_train(len(read) - len(dgs[-1]), SEG, len(frame), 0)     # last piece missing
    assert not whole_train(len(read) + SEG, SEG, len(frame), 0)              # a piece of the next
    assert not whole_train(len(read), SEG, len(frame), 1464)                 # not from the start


def test_the_joiner_drops_a_frame_with_a_piece_out_of_order_and_keeps_going() -> None:
    a, b = bytes([1]) * 4000, bytes([2]) * 100
    pa = split(a, SEG)
    j = Joiner()
    assert j.add(pa[0]) is None
    assert j.add(pa[2]) is None                 # pa[1] lost: the frame is dropped
    assert j.add(pa[1]) is None                 # too late, nothing in flight
    assert bytes(j.add(split(b, SEG)[0])) == b  # a whole small frame still passes
    assert j.add(b"short") is None


# ---------------------------------------------------------------- arithmetic

def run(path: str, gbps: float, rnd: int = 0, rep: int = 0, placement: str = "pinned",
        nbytes: int = 10**9, busy: float = 4.0, ctxt: int = 50_000) -> br.Run:
    return br.Run(path, placement, rnd, rep, gbps, nbytes, busy, ctxt)


def test_ctxt_is_read_from_proc_stat() -> None:
    text = "cpu  1 2 3 4 5 6 7 0 0 0\nintr 5 6\nctxt 123456789\nbtime 1\n"
    assert br.proc_stat_ctxt(text) == 123456789
    with pytest.raises(ValueError):
        br.proc_stat_ctxt("cpu  1 2 3\n")


def test_ratios_pair_runs_of_the_same_round_pass_and_placement() -> None:
    runs = [run("underlay", 10.0, 0, 0), run("sleeve", 3.0, 0, 0),
            run("underlay", 5.0, 0, 1), run("sleeve", 2.0, 0, 1),
            run("underlay", 8.0, 1, 0, "unpinned"), run("sleeve", 4.0, 1, 0, "unpinned"),
            run("sleeve", 9.0, 2, 0)]                          # no underlay run to pair with: left out
    assert br.paired(runs, "sleeve", "underlay", "pinned") == [0.3, 0.4]
    assert br.paired(runs, "sleeve", "underlay", "unpinned") == [0.5]


def test_summary_gives_shares_costs_per_gb_and_comparisons() -> None:
    runs = [run("underlay", 10.0, busy=1.0, ctxt=5_000), run("null_c", 5.0, busy=3.0),
            run("sleeve", 2.5, nbytes=5 * 10**8, busy=3.0, ctxt=20_000),
            run("underlay", 10.0, rep=1, busy=1.0), run("null_c", 4.0, rep=1), run("sleeve", 3.0, rep=1)]
    s = br.summarize(runs, ["underlay", "null_c", "sleeve"], compare=(("sleeve", "null_c"), ("x", "sleeve")))
    assert set(s) == {"pinned"}                        # no unpinned runs: no block
    rows = s["pinned"]["paths"]
    assert rows["underlay"]["share"] is None
    assert rows["null_c"]["share"] == {"median": 0.45, "low": 0.4, "high": 0.5, "n": 2}
    assert rows["sleeve"]["cpu_s_per_gb"]["high"] == 6.0          # 3 s over 0.5 GB
    assert rows["sleeve"]["ctxt_per_gb"] == {"median": 45_000, "low": 40_000, "high": 50_000, "n": 2}
    assert s["pinned"]["compare"] == {"sleeve/null_c": {"median": 0.625, "low": 0.5, "high": 0.75, "n": 2}}
    lines = "\n".join(br.table(s, {"sleeve": "the sleeve"}))
    assert "| the sleeve | 2.75 (2.50-3.00) | 27.5 (25.0-30.0) % |" in lines
    assert "sleeve/null_c, paired: 0.62 (0.50-0.75)" in lines


def test_costs_per_gb_of_the_machine_and_of_the_transfer_s_processes() -> None:
    r = br.Run("sleeve", "pinned", 0, 0, 2.0, 5 * 10**8, busy_s=3.0, ctxt=30_000, own_s=2.0)
    assert (r.cpu_s_per_gb, r.own_cpu_s_per_gb, r.ctxt_per_gb) == (6.0, 4.0, 60_000)
    s = br.summarize([run("underlay", 10.0), r], ["underlay", "sleeve"])
    assert s["pinned"]["paths"]["sleeve"]["own_cpu_s_per_gb"]["median"] == 4.0
    assert "| 6.00 | 4.00 | 60 k |" in "\n".join(br.table(s, {}))


def test_a_run_that_moved_nothing_has_no_cost_per_gb() -> None:
    r = run("sleeve", 0.0, nbytes=0)
    assert r.cpu_s_per_gb is None and r.ctxt_per_gb is None and r.own_cpu_s_per_gb is None
    assert br.Stat.of([None]) == br.Stat(None, None, None, 0)


@pytest.mark.parametrize("kw", [dict(rounds=0), dict(seconds=0.5), dict(paths=["sleeve", "nope"]),
                                dict(paths=["sleeve", "null_c"]), dict(placements=["sideways"]),
                                dict(paths=["underlay", "sleeve_base"]), dict(baseline="/nonexistent")])
def test_bad_options_are_refused_with_a_fix(kw: dict) -> None:
    with pytest.raises(UsageError):
        Options(**kw).check()


# ---------------------------------------------------------------- the sleeve's capture ring

def test_ring_slots_never_cross_a_block_and_hold_a_super_frame_with_room_around_it() -> None:
    from weave_fdp.datapath.sleeve import sockets as so
    from weave_fdp.datapath.sleeve.transmit import HEADROOM, TAILROOM

    bases = so.ring_slots(so.RING_FRAME, so.RING_BLOCK, so.RING_BLOCKS)
    assert len(bases) == 120 and bases[:2] == [0, so.RING_FRAME] and bases[15] == so.RING_BLOCK
    assert all(b % so.RING_BLOCK + so.RING_FRAME <= so.RING_BLOCK for b in bases)
    assert len(set(bases)) == len(bases) and bases == sorted(bases)
    # a 64 KiB super-frame and its vnet header, placed as tpacket_rcv places it with PACKET_RESERVE
    # = HEADROOM: the network header at TPACKET_ALIGN(52 + 16) + reserve + vnet = 154, so the
    # MAC header at 140 and the vnet header at 130
    vnet_at = 66 + HEADROOM
    assert vnet_at - HEADROOM >= so.TPACKET2_HDRLEN
    assert vnet_at + 10 + 65536 + TAILROOM <= so.RING_FRAME
