"""The CNI plugin's handling of the spec: the spec's example configurations and
environment variables in, results and error objects out (no router, no kernel)."""

from __future__ import annotations

import json

import pytest

from weave_fdp.cni import plugin, spec
from weave_fdp.cni.spec import CniError
from weave_fdp.router.client import RouterClient

# The spec's example network configuration (a bridge with host-local IPAM), our type.
EXAMPLE = {
    "cniVersion": "1.0.0",
    "name": "dbnet",
    "type": "weave-fdp-cni",
    "keyA": ["some more", "plugin specific", "configuration"],
    "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
             "routes": [{"dst": "0.0.0.0/0"}]},
    "dns": {"nameservers": ["10.1.0.1"]},
}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee00c0ffee", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}


def req(env: dict | None = None, config: dict | bytes | None = None) -> spec.Request:
    raw = config if isinstance(config, bytes) else json.dumps(EXAMPLE if config is None else config).encode()
    return spec.parse_request({**ENV, **(env or {})}, raw)


def code_of(env: dict | None = None, config: dict | bytes | None = None) -> int:
    with pytest.raises(CniError) as ei:
        req(env, config)
    assert ei.value.msg and "\n" not in ei.value.msg
    return ei.value.code


def test_the_spec_example_parses() -> None:
    r = req()
    assert (r.command, r.version, r.name, r.container_id, r.ifname) == ("ADD", "1.0.0", "dbnet", "c0ffee00c0ffee", "eth0")
    assert r.delegated_ipam == "host-local" and r.path == ["/opt/cni/bin", "/usr/lib/cni"]
    assert r.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}


def test_version_command() -> None:
    rc, out = plugin.run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}
    rc, out = plugin.run({"CNI_COMMAND": "VERSION"}, b"")
    assert rc == 0 and "1.0.0" in out["supportedVersions"]


@pytest.mark.parametrize("env,config,code", [
    ({"CNI_COMMAND": "FROB"}, None, 4),
    ({"CNI_COMMAND": ""}, None, 4),
    ({"CNI_CONTAINERID": ""}, None, 4),
    ({"CNI_CONTAINERID": "-bad"}, None, 4),
    ({"CNI_IFNAME": ""}, None, 4),
    ({"CNI_IFNAME": "averyveryverylongname"}, None, 4),
    ({"CNI_IFNAME": "eth:0"}, None, 4),
    ({"CNI_NETNS": ""}, None, 4),
    ({"CNI_NETNS": "relative/path"}, None, 4),
    ({"CNI_ARGS": "novalue"}, None, 4),
    ({}, b"{not json", 6),
    ({}, b"[1,2]", 6),
    ({}, b"\xff\xfe", 6),
    ({}, {**EXAMPLE, "cniVersion": "9.9.9"}, 1),
    ({}, {**EXAMPLE, "cniVersion": "one"}, 1),
    ({}, {**EXAMPLE, "cniVersion": 1}, 6),
    ({}, {k: v for k, v in EXAMPLE.items() if k != "name"}, 7),
    ({}, {k: v for k, v in EXAMPLE.items() if k != "type"}, 7),
    ({}, {**EXAMPLE, "name": "bad name"}, 7),
    ({}, {**EXAMPLE, "ipam": "host-local"}, 7),
    ({}, {**EXAMPLE, "ipam": {"type": 5}}, 7),
    ({}, {**EXAMPLE, "dns": []}, 7),
    ({"CNI_COMMAND": "CHECK"}, EXAMPLE, 7),                               # no prevResult
    ({"CNI_COMMAND": "CHECK"}, {**EXAMPLE, "cniVersion": "0.3.1", "prevResult": {}}, 1),
])
def test_bad_invocations_give_the_spec_codes(env: dict, config: dict | bytes | None, code: int) -> None:
    assert code_of(env, config) == code


def test_del_needs_no_netns() -> None:
    r = req({"CNI_COMMAND": "DEL", "CNI_NETNS": ""})
    assert r.command == "DEL" and r.netns == ""


def test_errors_are_the_spec_object_on_stdout() -> None:
    rc, out = plugin.run({**ENV}, json.dumps({**EXAMPLE, "cniVersion": "2.0.0"}).encode())
    assert rc == 1 and out["code"] == 1 and "2.0.0" in out["msg"] and out["cniVersion"] == "1.0.0"
    assert "0.4.0" in out["details"]


def test_router_not_running_is_try_again_later_with_advice() -> None:
    r = req({}, {k: v for k, v in EXAMPLE.items() if k != "ipam"})
    p = plugin.Plugin(r, dict(ENV), client=RouterClient(name="\0weave-fdp-test/none", timeout=2))
    with pytest.raises(CniError) as ei:
        p.add()
    assert ei.value.code == 11 and "not running" in ei.value.msg and "retry" in ei.value.details


@pytest.mark.parametrize("version,old", [("1.0.0", False), ("0.4.0", True), ("0.3.1", True)])
def test_add_result_in_the_requested_form(version: str, old: bool) -> None:
    r = req({}, {**EXAMPLE, "cniVersion": version})
    out = spec.add_result(r, host_if="vethwepl1234567", host_mac=None, container_mac="7e:00:00:00:00:01",
                          cidrs=["10.1.0.5/16"], gateways={"10.1.0.5": "10.1.0.1"},
                          routes=[{"dst": "0.0.0.0/0"}], dns={"domain": "weave.local"})
    assert out["cniVersion"] == version
    assert out["interfaces"][1] == {"name": "eth0", "mac": "7e:00:00:00:00:01", "sandbox": "/run/netns/x"}
    ip = out["ips"][0]
    assert ip["address"] == "10.1.0.5/16" and ip["interface"] == 1 and ip["gateway"] == "10.1.0.1"
    assert ("version" in ip) == old
    assert out["dns"] == {"domain": "weave.local", "nameservers": ["10.1.0.1"]}   # config's dns over IPAM's


def test_ipam_results_of_every_version_parse() -> None:
    r040 = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.2/16", "gateway": "10.1.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "dns": {}}
    got = spec.parse_ipam_result(r040)
    assert got.ips == [{"address": "10.1.0.2/16", "gateway": "10.1.0.1"}]
    assert got.routes == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    for bad in ([], {"ips": "x"}, {"ips": [{"address": "nope"}]}, {"ips": [], "routes": [{"gw": "1.2.3.4"}]}):
        with pytest.raises(CniError) as ei:
            spec.parse_ipam_result(bad)
        assert ei.value.code == 6


def test_explicit_addresses() -> None:
    r = req({"CNI_ARGS": "IP=10.32.1.5"}, {**EXAMPLE, "runtimeConfig": {"ips": ["10.32.9.9/12"]}})
    assert spec.requested_addresses(r, 12) == ["10.32.9.9/12", "10.32.1.5/12"]
    for bad_args, bad_rc in (("IP=nonsense", None), ("IP=fd00::1/64", None), ("", {"ips": "10.32.1.1"})):
        r = req({"CNI_ARGS": bad_args}, {**EXAMPLE, **({"runtimeConfig": bad_rc} if bad_rc else {})})
        with pytest.raises(CniError) as ei:
            spec.requested_addresses(r, 12)
        assert ei.value.code == 7


def test_prev_result_addresses_for_check() -> None:
    r = req({"CNI_COMMAND": "CHECK"}, {**EXAMPLE, "prevResult": {"ips": [{"address": "10.1.0.5/16"}]}})
    assert spec.prev_addresses(r) == ["10.1.0.5/16"]
