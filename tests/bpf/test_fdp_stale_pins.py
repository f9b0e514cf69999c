"""Pinned maps left by a router of another fastdp ABI are replaced, not reused."""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.datapath.fastdp import abi, pins
from weave_fdp.datapath.fastdp.loader import FastDatapath


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    d = pins.bpffs_root() / "sys/fs/bpf/weave-fdp" / f"_t{secrets.token_hex(4)}"
    d.mkdir(parents=True)
    yield d
    pins.remove_pins(d)


def _pin(pin_dir: Path, name: str, key_size: int, value_size: int, entries: int) -> None:
    fd = bpf.map_create(bpf.MAP_TYPE_HASH, key_size, value_size, entries)
    try:
        bpf.obj_pin(fd, str(pin_dir / name))
    finally:
        bpf.close(fd)


def test_stale_layouts_are_unpinned_current_ones_kept(pin_dir: Path) -> None:
    ports = abi.MAPS["fdp_port_addrs"]
    key, val = ctypes.sizeof(ports.key), ctypes.sizeof(ports.value)
    _pin(pin_dir, "fdp_port_addrs", key, val, 64)                  # fewer entries (ABI 5)
    _pin(pin_dir, "fdp_macs", ctypes.sizeof(abi.MAPS["fdp_macs"].key), 3, abi.MAPS["fdp_macs"].max_entries)
    current = abi.MAPS["fdp_learned"]
    fd = bpf.map_create(bpf.MAP_TYPE_LRU_HASH, ctypes.sizeof(current.key), ctypes.sizeof(current.value),
                        current.max_entries)
    bpf.obj_pin(fd, str(pin_dir / "fdp_learned"))
    bpf.close(fd)
    dropped = pins.drop_stale_pins(pin_dir, FastDatapath(pin_dir=pin_dir).map_layouts())
    assert dropped == ["fdp_macs", "fdp_port_addrs"]
    assert sorted(p.name for p in pin_dir.iterdir()) == ["fdp_learned"]


def test_load_over_stale_pins_creates_the_current_maps(pin_dir: Path) -> None:
    ports = abi.MAPS["fdp_port_addrs"]
    _pin(pin_dir, "fdp_port_addrs", ctypes.sizeof(ports.key), ctypes.sizeof(ports.value), 64)
    d = FastDatapath(pin_dir=pin_dir).load()
    try:
        fd = bpf.obj_get(str(pin_dir / "fdp_port_addrs"))
        try:
            assert bpf.map_info(fd).max_entries == ports.max_entries == abi.MAX_LOCAL_PORTS
        finally:
            bpf.close(fd)
    finally:
        d.close()
