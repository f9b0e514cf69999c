"""Plumbing helpers over real namespaces: veths across namespaces, bridges, addresses, errors."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from weave_fdp.errors import AlreadyExists, NotFound, UsageError
from weave_fdp.plumbing import links
from weave_fdp.plumbing.netns import (
    NetnsCommandTimeout,
    create_netns,
    delete_netns,
    kill_netns_pids,
    list_netns,
    netns_exists,
    netns_ipr,
    netns_pids,
    popen_in_netns,
    run_in_netns,
    temporary_netns,
)


@pytest.fixture
def two_ns() -> Iterator[tuple[str, str]]:
    p = "t" + secrets.token_hex(3)[:5]
    with temporary_netns(f"{p}-host") as host, temporary_netns(f"{p}-ctr") as ctr:
        yield host, ctr


def test_attach_like_the_router(two_ns: tuple[str, str]) -> None:
    host, ctr = two_ns
    links.create_bridge("weave", netns=host, mtu=1376)
    links.create_bridge("weave", netns=host)  # exist_ok by default
    links.create_veth("vethwepl1234", "ethwe", netns=host, peer_netns=ctr, mtu=1376)
    links.set_master("vethwepl1234", "weave", netns=host)
    links.add_address("ethwe", "10.32.1.1/12", netns=ctr)
    links.add_address("ethwe", "10.32.1.1/12", netns=ctr)  # idempotent
    port = links.get_link("vethwepl1234", host)
    assert port.master == links.link_index("weave", host) and port.mtu == 1376 and port.up
    ethwe = links.get_link("ethwe", ctr)
    assert ethwe.kind == "veth" and "10.32.1.1/12" in ethwe.addresses and ethwe.mtu == 1376 and ethwe.up
    assert not links.link_exists("ethwe", host) and not links.link_exists("vethwepl1234", None)
    with pytest.raises(AlreadyExists, match="vethwepl1234"):
        links.create_veth("vethwepl1234", "x", netns=host)
    assert links.del_address("ethwe", "10.32.1.1/12", netns=ctr)
    assert not links.del_address("ethwe", "10.32.1.1/12", netns=ctr)
    assert links.delete_link("vethwepl1234", host)
    assert not links.delete_link("vethwepl1234", host)  # already gone is fine
    assert not links.link_exists("ethwe", ctr)  # the peer went with it


def test_move_rename_mtu_route(two_ns: tuple[str, str]) -> None:
    host, ctr = two_ns
    with netns_ipr(host) as ipr:  # one handle for a batch of calls
        links.create_veth("vtmp0", "vtmp1", netns=ipr)
        links.set_mtu("vtmp0", 1400, netns=ipr)
        links.rename_link("vtmp0", "vethwepl9", netns=ipr)
        links.set_up("vethwepl9", netns=ipr)
    links.move_to_netns("vtmp1", ctr, netns=host, new_name="ethwe")
    assert links.get_link("ethwe", ctr).up and links.get_link("vethwepl9", host).mtu == 1400
    links.add_address("ethwe", "10.32.2.1/12", netns=ctr)
    links.add_route("default", dev="ethwe", netns=ctr)
    links.add_route("default", dev="ethwe", netns=ctr)  # exist_ok
    assert "default dev ethwe" in run_in_netns(ctr, ["ip", "route"]).stdout
    links.set_down("ethwe", ctr)
    assert not links.get_link("ethwe", ctr).up
    with pytest.raises(UsageError):
        links.set_mtu("ethwe", 10, ctr)
    with pytest.raises(UsageError):
        links.create_veth("a" * 16, "b", netns=host)
    with pytest.raises(NotFound, match="nope0"):
        links.set_up("nope0", host)


def test_netns_lifecycle_and_errors() -> None:
    name = "t" + secrets.token_hex(3)[:5] + "-x"
    assert create_netns(name) == name
    try:
        assert name in list_netns(prefix=name[:6])
        assert links.get_link("lo", name).up
        with pytest.raises(AlreadyExists, match=name):
            create_netns(name)
        assert create_netns(name, exist_ok=True) == name
        p = popen_in_netns(name, ["sleep", "30"])
        deadline = time.monotonic() + 5
        while not netns_pids(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kill_netns_pids(name) == [p.pid] and p.wait(timeout=5) != 0
        with pytest.raises(NetnsCommandTimeout) as ei:
            run_in_netns(name, ["sleep", "5"], timeout=0.3)
        assert isinstance(ei.value, subprocess.TimeoutExpired)
    finally:
        assert delete_netns(name)
    assert not delete_netns(name)  # already gone
    with pytest.raises(NotFound):
        with netns_ipr(name):
            pass
    assert not netns_exists(name)  # looking never creates it
    with pytest.raises(NotFound):
        run_in_netns(name, ["true"])
    with pytest.raises(UsageError):
        create_netns("bad/name")


def test_sleeve_only_attach_caps_super_frames_to_one_sleeve_train(two_ns: tuple[str, str]) -> None:
    """A router without fastdp (``BridgePorts``): every frame crosses the sleeve, so containers'
    super-frames are capped to what one UDP GSO train of pieces carries (docs/SLEEVE.md)."""
    from weave_fdp.datapath.bridge_ports import BridgePorts
    from weave_fdp.datapath.sleeve.sizing import container_gso_max_size

    host, ctr = two_ns
    ports = BridgePorts(netns=host, mtu=1450)
    ports.start()
    link = ports.attach(f"/run/netns/{ctr}", ["10.32.1.1/12"])
    assert links.get_gso_max_size("ethwe", ctr) == container_gso_max_size(1500) == 63669
    assert links.get_gso_max_size(link.host_ifname, host) == 65536     # only the container's side
    assert ports.detach(f"/run/netns/{ctr}")
