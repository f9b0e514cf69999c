"""One set of address rules for every attach: the API grammar, the plumbing, the CNI plugin, the IPAM ops."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from weave_fdp import addresses
from weave_fdp.addresses import AddrSpec, explicit_cidrs, host_cidr, parse_specs, subnet
from weave_fdp.cni import spec as cni_spec
from weave_fdp.errors import UsageError
from weave_fdp.plumbing.container_link import check_cidrs


def test_host_addresses() -> None:
    assert host_cidr("10.32.1.1/12") == "10.32.1.1/12"
    assert host_cidr("10.32.1.1", default_prefix=12) == "10.32.1.1/12"
    assert host_cidr("192.0.2.7/31") == "192.0.2.7/31" and host_cidr("192.0.2.6/31") == "192.0.2.6/31"
    assert host_cidr("192.0.2.7/32") == "192.0.2.7/32"
    for bad, why in [("10.32.1.1", "lacks a prefix length"), ("10.32.1.300/12", "bad address"),
                     ("fd00::1/64", "is not IPv4"), ("10.32.0.0/12", "network address"),
                     ("10.47.255.255/12", "broadcast address"), ("nope", "lacks a prefix length"),
                     ("x/12", "bad address")]:
        with pytest.raises(UsageError, match=why):
            host_cidr(bad)
    with pytest.raises(UsageError, match="not a string"):
        host_cidr(None)


def test_subnets() -> None:
    assert subnet("10.32.5.9/24") == "10.32.5.0/24"
    for bad, why in [("10.32.0.0/31", "no address for a host"), ("10.32.0.0", "prefix length"),
                     ("nope", "bad subnet"), ("fd00::/64", "bad subnet")]:
        with pytest.raises(UsageError, match=why):
            subnet(bad)


def test_grammar() -> None:
    assert parse_specs(["10.32.1.1/12", "ip:10.32.1.2/12", "net:10.32.5.9/24", "net:default"]) == [
        AddrSpec("ip", "10.32.1.1/12"), AddrSpec("ip", "10.32.1.2/12"), AddrSpec("net", "10.32.5.0/24"),
        AddrSpec("net", None)]
    assert explicit_cidrs(["ip:10.32.1.2/12"]) == ["10.32.1.2/12"]
    with pytest.raises(UsageError, match="needs IPAM"):
        explicit_cidrs(["net:default"])
    with pytest.raises(UsageError, match="network address"):
        parse_specs(["ip:10.32.0.0/12"])


def _verdict(fn, *args):
    try:
        return fn(*args)
    except (UsageError, cni_spec.CniError):
        return "refused"


def _cni_request(ip: str) -> cni_spec.Request:
    import json

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/proc/1/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": ""}
    conf = {"cniVersion": "1.0.0", "name": "weave", "type": "weave-fdp-cni", "runtimeConfig": {"ips": [ip]}}
    return cni_spec.parse_request(env, json.dumps(conf).encode())


ADDRESSES = st.one_of(
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
              st.integers(0, 33)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[4]}"),
    st.sampled_from(["10.32.1.1", "10.32.0.0/12", "fd00::1/64", "10.32.1.256/12", "", "/12", "10.32.1.1/x"]),
    st.text(max_size=20))


@given(ADDRESSES)
def test_every_way_in_applies_the_same_rules(text: str) -> None:
    """The API grammar, the plumbing, the CNI plugin (explicit and delegated) and the IPAM
    claim accept exactly the same addresses, and normalize them the same way."""
    want = _verdict(host_cidr, text)
    if not text.startswith(("ip:", "net:")):
        assert _verdict(lambda t: parse_specs([t])[0].cidr, text) == want
    assert _verdict(lambda t: check_cidrs([t])[0], text) == want
    assert _verdict(lambda t: cni_spec.delegated_addresses([t])[0], text) == want
    if "/" in text and "," not in text:   # the CNI plugin adds a default prefix; IP= splits on commas
        assert _verdict(lambda t: cni_spec.requested_addresses(_cni_request(t), 12)[0], text) == \
            _verdict(host_cidr, text.strip())


def test_cni_errors_carry_the_shared_message() -> None:
    with pytest.raises(cni_spec.CniError) as ei:
        cni_spec.delegated_addresses(["fd00::5/64"])
    assert ei.value.code == 7 and "is not IPv4" in ei.value.msg and "IPAM plugin" in ei.value.details
    with pytest.raises(cni_spec.CniError) as ei:
        cni_spec.requested_addresses(_cni_request("10.32.0.0/12"), 12)
    assert ei.value.code == 7 and "network address" in ei.value.msg


def test_module_is_pure() -> None:
    import ast
    tree = ast.parse(open(addresses.__file__).read())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
           {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert mods <= {"__future__", "ipaddress", "dataclasses", "typing", "weave_fdp.errors"}
