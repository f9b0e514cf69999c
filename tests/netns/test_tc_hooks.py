"""fastdp's programs at tc hooks (datapath/hooks.py) over a real namespace: tcx first,
clsact filters where the kernel refuses tcx; keep, replace, detach, a leftover filter removed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.datapath import hooks, tcx
from weave_fdp.plumbing import links, tc
from weave_fdp.plumbing.netns import run_in_netns, temporary_netns

TC_ACT_OK, TC_ACT_UNSPEC = 0, -1
NAME = "fdp_hook_test_program"     # longer than the kernel keeps (15)


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("t" + secrets.token_hex(3)[:5] + "-tc") as name:
        links.create_veth("hooka", "hookb", netns=name)
        yield name


def prog(verdict: int = TC_ACT_OK) -> int:
    return bpf.prog_load(bpf.PROG_TYPE_SCHED_CLS, bpf.return_imm(verdict), name=NAME[:15])


def filter_lines(ns: str, dev: str, direction: str = "ingress") -> list[str]:
    out = run_in_netns(ns, ["tc", "filter", "show", "dev", dev, direction], check=False).stdout
    return [ln for ln in out.splitlines() if " bpf " in ln and " handle " in ln]


def test_tcx_attach_keep_replace_detach(ns: str) -> None:
    a, b = prog(TC_ACT_OK), prog(TC_ACT_UNSPEC)
    try:
        tag_a, tag_b = bpf.prog_info(a).tag, bpf.prog_info(b).tag
        assert tag_a != tag_b
        assert hooks.attach("hooka", a, NAME, netns=ns, tag=tag_a) == ("tcx", True)
        assert hooks.hook_kind("hooka", NAME, netns=ns) == "tcx"
        assert filter_lines(ns, "hooka") == []          # no qdisc, no filter
        first = hooks.program_info("hooka", netns=ns, name=NAME)
        assert first is not None and first["tag"] == tag_a
        # the same code again: kept, not swapped
        assert hooks.attach("hooka", a, NAME, netns=ns, tag=tag_a) == ("tcx", False)
        # other code under the same name: swapped in place, still one program
        assert hooks.attach("hooka", b, NAME, netns=ns, tag=tag_b) == ("tcx", True)
        now = hooks.program_info("hooka", netns=ns, name=NAME)
        assert now is not None and now["tag"] == tag_b and now["id"] != first["id"]
        hooks.name_programs(NAME)
        assert hooks.programs("hooka", netns=ns) == [NAME]
        assert hooks.devices_with_program(NAME, netns=ns) == ["hooka"]
        assert hooks.detach("hooka", NAME, netns=ns) is True
        assert hooks.programs("hooka", netns=ns) == [] and hooks.hook_kind("hooka", NAME, netns=ns) is None
        assert hooks.detach("hooka", NAME, netns=ns) is False
    finally:
        bpf.close(a)
        bpf.close(b)


def test_a_filter_left_by_an_earlier_router_goes_when_tcx_takes_over(ns: str) -> None:
    a = prog()
    try:
        # what a router of the clsact era left: the program as a filter at priority/handle 1
        assert tc.attach("hooka", a, NAME, netns=ns)
        assert len(filter_lines(ns, "hooka")) == 1
        assert hooks.attach("hooka", a, NAME, netns=ns) == ("tcx", True)
        assert hooks.hook_kind("hooka", NAME, netns=ns) == "tcx"
        assert filter_lines(ns, "hooka") == []           # it would run the program twice
        assert hooks.detach_all("hooka", netns=ns) is True
        assert hooks.programs("hooka", netns=ns) == []
    finally:
        bpf.close(a)


def test_a_kernel_without_tcx_gets_clsact_filters(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attach type the kernel does not know fails with EINVAL, as tcx's does before 6.6."""
    monkeypatch.setattr(tcx, "ATTACH_TYPES", {"ingress": 0xFFF0, "egress": 0xFFF1})
    monkeypatch.setattr(hooks, "_tcx_missing", False)
    a = prog()
    try:
        with pytest.raises(tcx.Unsupported):
            tcx.attached(links.link_index("hooka", ns) or 0, "ingress")
        assert hooks.attach("hooka", a, NAME, direction="egress", netns=ns) == ("clsact", True)
        assert hooks._tcx_missing is True                   # remembered: no second try per device
        assert hooks.hook_kind("hooka", NAME, direction="egress", netns=ns) == "clsact"
        assert len(filter_lines(ns, "hooka", "egress")) == 1
        assert NAME in hooks.programs("hooka", direction="egress", netns=ns)
        assert hooks.detach("hooka", NAME, direction="egress", netns=ns) is True
        assert filter_lines(ns, "hooka", "egress") == []
    finally:
        bpf.close(a)


def test_attach_to_a_missing_device_says_so(ns: str) -> None:
    a = prog()
    try:
        with pytest.raises(Exception, match="does not exist"):
            hooks.attach("nosuchdev", a, NAME, netns=ns)
    finally:
        bpf.close(a)
