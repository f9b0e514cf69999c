"""The DNS commands' argument grammar and output shapes (no router)."""

from __future__ import annotations

import pytest

from weave_fdp.cli.commands.dns import split_dns_args, status_dns_lines
from weave_fdp.cli.status_format import dns_rows, dns_summary
from weave_fdp.errors import UsageError

pytestmark = pytest.mark.unit


def test_ips_then_an_optional_target() -> None:
    assert split_dns_args(("10.32.1.1", "10.32.1.2", "netns:web")) == (["10.32.1.1", "10.32.1.2"], "netns:web")
    assert split_dns_args(("10.32.1.1",)) == (["10.32.1.1"], None)
    assert split_dns_args(("web",)) == ([], "web")
    with pytest.raises(UsageError, match="last argument"):
        split_dns_args(("netns:web", "10.32.1.1"))


def test_status_dns_is_weaves_shape() -> None:
    section = {"domain": "weave.local.", "entries": [
        {"name": "web.weave.local.", "container": "netns:web1", "address": "10.32.1.1",
         "origin": "ce:31:e0:06:45:1a", "origin_nickname": "h1"},
        {"name": "db.svc.weave.local.", "container": "weave:extern", "address": "10.32.9.9",
         "origin": "7e:5d:1c:00:91:2a", "origin_nickname": None}]}
    assert status_dns_lines(section) == [
        "web     netns:web1    10.32.1.1  ce:31:e0:06:45:1a(h1)",
        "db.svc  weave:extern  10.32.9.9  7e:5d:1c:00:91:2a"]
    assert status_dns_lines({"domain": "weave.local.", "entries": []}) == []


def test_status_summary_block() -> None:
    s = dns_summary({"domain": "weave.local.", "upstream": [], "ttl": 1, "entries": [{}], "address": "169.254.53.53",
                     "error": "cannot serve DNS on 169.254.53.53:53: address in use"})
    rows = dict(dns_rows(s))
    assert rows["Service"] == "dns" and rows["Upstream"] == "none" and rows["Entries"] == 1
    assert "address in use" in rows["Error"]
    assert dns_summary(None) is None


def test_status_says_who_answered() -> None:
    from weave_fdp.cli.status_format import answered_line

    section = {"domain": "weave.local.", "upstream": [], "ttl": 1, "entries": [], "address": "169.254.53.53",
               "stats": {"answered": 7}, "kernel": {"answered": 900}}
    rows = dict(dns_rows(dns_summary(section)))
    assert rows["Answered in the kernel"] == 900 and rows["Answered by the server"] == 7
    assert answered_line(section) == "answered: 900 in the kernel, 7 by the server"
    section["kernel"] = None          # no fastdp
    rows = dict(dns_rows(dns_summary(section)))
    assert "Answered in the kernel" not in rows and rows["Answered by the server"] == 7
    assert answered_line(section) == "answered: 7 by the server"
