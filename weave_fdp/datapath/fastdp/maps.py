"""BPF maps by file descriptor, with the ABI types of ``abi.py``.

Works the same for maps bcc just created and for maps opened from their bpffs
pins (``open_pinned``), so ``reset`` and a restarted router need no compile.
Per-CPU values come back as one struct per possible CPU.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

from bcc import libbcc

from weave_fdp.errors import DatapathError

_lib = libbcc.lib
K = TypeVar("K", bound=ctypes._SimpleCData | ctypes.Structure)  # type: ignore[name-defined]
V = TypeVar("V", bound=ctypes._SimpleCData | ctypes.Structure)  # type: ignore[name-defined]

BPF_ANY = 0


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
        if _lib.bpf_lookup_elem(self.fd, ctypes.byref(key), buf) < 0:
            return None
        return self._split(buf) if self.percpu else [self.value_type.from_buffer_copy(buf.raw)]

    def set(self, key: K, value: V) -> None:
        if self.percpu:
            step = _round8(ctypes.sizeof(self.value_type))
            buf = ctypes.create_string_buffer(step * self._ncpu)
            for i in range(self._ncpu):
                ctypes.memmove(ctypes.addressof(buf) + i * step, ctypes.byref(value), ctypes.sizeof(value))
            ptr = buf
        else:
            ptr = ctypes.byref(value)
        if _lib.bpf_update_elem(self.fd, ctypes.byref(key), ptr, BPF_ANY) < 0:
            err = ctypes.get_errno() or errno.EINVAL
            raise DatapathError(f"cannot update BPF map {self.name}: {os.strerror(err)}")

    def delete(self, key: K) -> bool:
        return _lib.bpf_delete_elem(self.fd, ctypes.byref(key)) == 0

    def keys(self) -> Iterator[K]:
        key = self.key_type()
        nxt = self.key_type()
        if _lib.bpf_get_first_key(self.fd, ctypes.byref(nxt), ctypes.sizeof(nxt)) < 0:
            return
        while True:
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            yield self.key_type.from_buffer_copy(key)
            if _lib.bpf_get_next_key(self.fd, ctypes.byref(key), ctypes.byref(nxt)) < 0:
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
    fd = _lib.bpf_obj_get(str(path).encode())
    if fd < 0:
        raise DatapathError(f"no BPF map pinned at {path}")
    return fd
