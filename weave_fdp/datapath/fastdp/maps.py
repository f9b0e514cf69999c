"""BPF maps by file descriptor, with the ABI types of ``abi.py``.

Works on any map fd: the loader's (opened from the pins the compile child left),
or one opened from its bpffs pin (``open_pinned``). Only raw bpf() calls
(``datapath.bpf_syscall``): the router never maps libbcc. Per-CPU values come
back as one struct per possible CPU (each rounded up to 8 bytes in the buffer).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

from weave_fdp.datapath import bpf_syscall as bpf
from weave_fdp.errors import CapacityFull, DatapathError

K = TypeVar("K", bound=ctypes._SimpleCData | ctypes.Structure)  # type: ignore[name-defined]
V = TypeVar("V", bound=ctypes._SimpleCData | ctypes.Structure)  # type: ignore[name-defined]

BPF_ANY = bpf.BPF_ANY


def possible_cpus() -> int:
    """Number of possible CPUs (the length of a per-CPU value)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total


def _round8(n: int) -> int:
    return (n + 7) & ~7


class BpfMap(Generic[K, V]):
    """One map: ``get``/``set``/``delete``/``keys``/``items`` with ctypes keys and values."""

    def __init__(self, fd: int, name: str, key_type: type[K], value_type: type[V], *,
                 percpu: bool = False, owned: bool = False) -> None:
        self.fd, self.name = fd, name
        self.key_type, self.value_type = key_type, value_type
        self.percpu = percpu
        self._owned = owned
        self._ncpu = possible_cpus() if percpu else 1

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self) -> ctypes.Array:
        size = _round8(ctypes.sizeof(self.value_type)) * self._ncpu if self.percpu else ctypes.sizeof(self.value_type)
        return ctypes.create_string_buffer(size)

    def _split(self, buf: ctypes.Array) -> list[V]:
        step = _round8(ctypes.sizeof(self.value_type))
        return [self.value_type.from_buffer_copy(buf.raw[i * step:i * step + ctypes.sizeof(self.value_type)])
                for i in range(self._ncpu)]

    def get(self, key: K) -> V | None:
        """The value (for per-CPU maps: use ``get_percpu``), or None when absent."""
        vals = self.get_percpu(key)
        return vals[0] if vals else None

    def get_percpu(self, key: K) -> list[V] | None:
        buf = self._value_buf()
        try:
            if not bpf.map_lookup(self.fd, key, buf):
                return None
        except bpf.BpfSyscallError as exc:
            raise DatapathError(f"cannot read BPF map {self.name}: {exc.strerror}") from exc
        return self._split(buf) if self.percpu else [self.value_type.from_buffer_copy(buf.raw)]

    def set(self, key: K, value: V) -> None:
        if self.percpu:
            step = _round8(ctypes.sizeof(self.value_type))
            buf = ctypes.create_string_buffer(step * self._ncpu)
            for i in range(self._ncpu):
                ctypes.memmove(ctypes.addressof(buf) + i * step, ctypes.byref(value), ctypes.sizeof(value))
            ptr: object = buf
        else:
            ptr = value
        try:
            bpf.map_update(self.fd, key, ptr, BPF_ANY)
        except bpf.BpfSyscallError as exc:
            if exc.errno == errno.E2BIG:   # a hash map at its max_entries
                raise CapacityFull(f"BPF map {self.name} is full ({bpf.map_info(self.fd).max_entries} entries)",
                                   fix="detach containers, or wait for learned entries to age out") from exc
            raise DatapathError(f"cannot update BPF map {self.name}: {exc.strerror}") from exc

    def delete(self, key: K) -> bool:
        """Remove ``key``; False when it was not there (or the map is an array)."""
        try:
            return bpf.map_delete(self.fd, key)
        except bpf.BpfSyscallError:
            return False  # arrays refuse deletes (EINVAL): nothing was removed

    def keys(self) -> Iterator[K]:
        key = self.key_type()
        nxt = self.key_type()
        if not bpf.map_next_key(self.fd, None, nxt):
            return
        while True:
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            yield self.key_type.from_buffer_copy(key)
            # a key deleted meanwhile (LRU eviction) makes the kernel restart from the first
            # key of its bucket list; that is fine for counters (a repeat at worst)
            if not bpf.map_next_key(self.fd, key, nxt):
                return

    def items_percpu(self) -> Iterator[tuple[K, list[V]]]:
        for key in list(self.keys()):
            vals = self.get_percpu(key)
            if vals is not None:
                yield key, vals

    def clear(self) -> None:
        for key in list(self.keys()):
            self.delete(key)


def open_pinned(path: Path) -> int:
    """fd of the map pinned at ``path`` (DatapathError when absent)."""
    try:
        return bpf.obj_get(str(path))
    except bpf.BpfSyscallError as exc:
        raise DatapathError(f"no BPF map pinned at {path}: {exc.strerror}") from exc
