"""The DNS fast path's map entries (datapath/dns_plan.py): pure, no kernel."""

from __future__ import annotations

import pytest
from dnslib import DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from weave_fdp.datapath import dns_plan
from weave_fdp.datapath.fastdp import abi
from weave_fdp.router.dns.ratelimit import SourceLimiter

pytestmark = pytest.mark.unit

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20)
ip = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
names = st.dictionaries(st.lists(label, min_size=1, max_size=3).map(lambda ls: ".".join(ls) + ".weave.local."),
                        st.lists(ip, min_size=1, max_size=20, unique=True), max_size=30)


def test_wire_key_is_the_lower_cased_wire_name() -> None:
    assert dns_plan.wire_key("Web.Weave.Local.") == b"\x03web\x05weave\x05local\x00"
    assert dns_plan.wire_key("web.weave.local") == dns_plan.wire_key("WEB.weave.local.")
    # as dnslib writes the (lower-cased) name on the wire
    assert dns_plan.wire_key("A.b.weave.local.") == bytes(DNSRecord.question("a.b.weave.local.").pack())[12:-4]
    assert dns_plan.wire_key("x" * 64 + ".weave.local.") is None            # a label over 63 bytes
    assert dns_plan.wire_key("a..weave.local.") is None                       # an empty label
    assert dns_plan.wire_key("ü.weave.local.") is None                        # not ASCII
    long = ".".join(["a" * 60] * 2) + ".weave.local."
    assert dns_plan.wire_key(long) is None                                    # over DNS_NAME_MAX bytes


@given(st.lists(label, min_size=1, max_size=6))
def test_wire_key_round_trips(labels: list[str]) -> None:
    name = ".".join(labels) + "."
    key = dns_plan.wire_key(name)
    if key is None:
        assert len(name) + 1 > abi.DNS_NAME_MAX
        return
    assert len(key) == len(name) + 1 and key.endswith(b"\0")
    assert dns_plan.name_of_key(key) == name.lower()
    assert dns_plan.key_unpadded(dns_plan.key_bytes(key)) == key      # as read back from the map


def test_plan_keeps_what_the_kernel_can_answer() -> None:
    snap = {"web.weave.local.": ("10.32.1.1",), "weave.local.": ("10.32.9.9",), "x.example.": ("10.32.1.2",),
            "big.weave.local.": tuple(f"10.32.2.{i}" for i in range(1, 18)),
            "sixteen.weave.local.": tuple(f"10.32.3.{i}" for i in range(1, 17)),
            "gone.weave.local.": ()}
    got = dns_plan.plan_entries(snap, "weave.local.", 1)
    assert {dns_plan.name_of_key(k) for k in got} == {"web.weave.local.", "sixteen.weave.local."}
    assert got[dns_plan.wire_key("web.weave.local.")] == dns_plan.DnsEntry(1, ("10.32.1.1",))


def test_plan_follows_a_custom_domain_and_ttl() -> None:
    snap = {"web.weave.local.": ("10.32.1.1",), "web.corp.": ("10.32.1.2",)}
    got = dns_plan.plan_entries(snap, "Corp", 30)
    assert got == {dns_plan.wire_key("web.corp."): dns_plan.DnsEntry(30, ("10.32.1.2",))}


def test_plan_holds_at_most_max_names_first_by_name() -> None:
    snap = {f"n{i:03d}.weave.local.": ("10.32.0.1",) for i in range(10)}
    got = dns_plan.plan_entries(snap, "weave.local.", 1, max_names=3)
    assert sorted(dns_plan.name_of_key(k) for k in got) == ["n000.weave.local.", "n001.weave.local.",
                                                          "n002.weave.local."]


@settings(max_examples=200)
@given(names, names)
def test_diff_takes_any_map_to_the_plan(before: dict, after: dict) -> None:
    cur = dns_plan.plan_entries(before, "weave.local.", 1)
    want = dns_plan.plan_entries(after, "weave.local.", 1)
    diff = dns_plan.diff_entries(cur, want)
    applied = {k: v for k, v in cur.items() if k not in diff.delete}
    applied.update(diff.upsert)
    assert applied == {**applied, **want} and set(applied) == set(want)
    for k in want:
        assert sorted(applied[k].addrs) == sorted(want[k].addrs)
    # unchanged entries are not rewritten, and no key is both written and deleted
    assert not set(diff.upsert) & set(diff.delete)
    assert all(cur.get(k) is None or sorted(cur[k].addrs) != sorted(v.addrs) for k, v in diff.upsert.items())
    assert dns_plan.diff_entries(want, want) == dns_plan.DnsDiff({}, [])


@settings(max_examples=200)
@given(names)
def test_every_planned_name_is_in_the_domain_and_fits(snap: dict) -> None:
    for key, e in dns_plan.plan_entries(snap, "weave.local.", 5).items():
        name = dns_plan.name_of_key(key)
        assert name.endswith(".weave.local.") and name in {n.lower() for n in snap}
        assert 1 <= len(e.addrs) <= abi.DNS_MAX_ADDRS and len(key) <= abi.DNS_NAME_MAX and e.ttl == 5


def _gcra(interval: int, burst_ns: int, times: list[int]) -> list[bool]:
    """The program's rate limit (bpf/lib/dns.h fdp_dns_allow), step by step."""
    tat: int | None = None
    out = []
    for now in times:
        if tat is None:
            tat = now + interval
            out.append(True)
            continue
        t = max(tat, now)
        if t - now > burst_ns:
            out.append(False)
            continue
        tat = t + interval
        out.append(True)
    return out


@settings(max_examples=200)
@given(st.sampled_from([1.0, 2.0, 4.0, 8.0]), st.integers(1, 50),
       st.lists(st.integers(0, 2_000_000_000), min_size=1, max_size=200))
def test_rate_settings_admit_what_the_token_bucket_admits(rate: float, burst: int, offsets: list[int]) -> None:
    """The kernel's GCRA with rate_settings admits exactly what the server's bucket does.
    Times sit on a whole-interval grid, so many decisions fall exactly on a boundary;
    rates whose interval is a binary fraction of a second keep the bucket's float
    arithmetic exact there (at 5/s, 1.8 - 1.6 s refills 0.9999999999999998 tokens)."""
    interval, burst_ns = dns_plan.rate_settings(rate, float(burst))
    times = sorted(o - o % interval for o in offsets)
    lim = SourceLimiter(rate, float(burst))
    bucket = [lim.allow("s", t / 1e9) for t in times]
    assert _gcra(interval, burst_ns, times) == bucket


def test_no_rate_means_no_limit() -> None:
    assert dns_plan.rate_settings(0, 2000) == (0, 0)
    assert dns_plan.rate_settings(1000, 2000) == (1_000_000, 1999 * 1_000_000)
