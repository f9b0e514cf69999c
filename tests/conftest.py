"""Test tiers (markers) and the skips every tier states a reason for.

unit  - pure logic, no privileges
bpf   - BPF programs run on crafted packets (root + bcc)
netns - real hosts in network namespaces (root + iproute2)
chaos - fault injection over labs of routers (root); `make chaos`, only `chaos_short` ones in `make test`

The multi-VM lab (Vagrant) is no pytest tier: `make vm-test` runs vagrant/check.sh.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _is_root() -> bool:
    return os.geteuid() == 0


def _has_bcc() -> bool:
    try:
        import bcc  # noqa: F401
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        for tier in ("unit", "bpf", "netns", "chaos"):
            # (not `tier in item.keywords`: the folder name alone puts it there, without the marker)
            if f"{os.sep}tests{os.sep}{tier}{os.sep}" in path and item.get_closest_marker(tier) is None:
                item.add_marker(getattr(pytest.mark, tier))
        if "bpf" in item.keywords:
            if not _is_root():
                item.add_marker(pytest.mark.skip(reason="bpf tier needs root to load programs"))
            elif not _has_bcc():
                item.add_marker(pytest.mark.skip(reason="bpf tier needs bcc (apt-get install python3-bpfcc)"))
        if "netns" in item.keywords or "chaos" in item.keywords:
            if not _is_root():
                item.add_marker(pytest.mark.skip(reason="netns tier needs root to create namespaces"))
            elif shutil.which("ip") is None:
                item.add_marker(pytest.mark.skip(reason="netns tier needs iproute2's ip"))
