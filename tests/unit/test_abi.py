"""abi.py mirrors bpf/fdp_abi.h and bpf/lib/maps.h in full (no compiler needed).

The header is parsed, not sampled: every numeric ``#define``, every enum (all its
members), every struct (every field's name, type and array length) and every
map declaration must have its mirror, so a new one in the header without its
Python twin fails here. tests/bpf/test_abi_layout.py then measures the layouts
with the compiler.
"""

from __future__ import annotations

import ctypes
import re

import pytest

from weave_fdp.datapath.fastdp import abi
from weave_fdp.datapath.fastdp.source import BPF_DIR

HEADER = (BPF_DIR / "fdp_abi.h").read_text()
MAPS_H = (BPF_DIR / "lib" / "maps.h").read_text()
_C_INT = {"__u8": ctypes.c_uint8, "__u16": ctypes.c_uint16, "__u32": ctypes.c_uint32, "__u64": ctypes.c_uint64,
          "u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64}


def _code(text: str) -> str:
    """C text without comments."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def _defines(text: str) -> dict[str, str]:
    """Every ``#define NAME VALUE`` (the include guard has no value and is left out)."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^#define\s+(\w+)[ \t]+(\S[^\n]*)$", _code(text), re.M)}


DEFINES = _defines(HEADER)


def _enums() -> dict[str, dict[str, int]]:
    return {m.group(1): {k: int(v, 0) for k, v in re.findall(r"(\w+)\s*=\s*(\w+)\s*,?", m.group(2))}
            for m in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\};", _code(HEADER), re.S)}


ENUM_MEMBERS = {k: v for members in _enums().values() for k, v in members.items()}


def _int(token: str) -> int:
    """A literal, a #define or an enum member of the header, as a number."""
    token = token.strip()
    if token in DEFINES:
        return _int(DEFINES[token])
    if token in ENUM_MEMBERS:
        return ENUM_MEMBERS[token]
    return int(token, 0)


def _structs() -> dict[str, list[tuple[str, str, int | None]]]:
    """struct name -> [(C type, field, array length or None)]."""
    out: dict[str, list[tuple[str, str, int | None]]] = {}
    for m in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\};", _code(HEADER), re.S):
        fields = []
        for decl in (d.strip() for d in m.group(2).split(";")):
            if not decl:
                continue
            f = re.fullmatch(r"(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?", decl)
            assert f, f"cannot read field {decl!r} of struct {m.group(1)}"
            fields.append((" ".join(f.group(1).split()), f.group(2), _int(f.group(3)) if f.group(3) else None))
        out[m.group(1)] = fields
    return out


def _ctype(c_type: str) -> type:
    if c_type.startswith("struct "):
        return abi.STRUCTS[c_type.split()[1]]
    return _C_INT[c_type]


def test_every_define_is_mirrored() -> None:
    assert len(DEFINES) >= 30, "the header parser found too few #defines"
    for name, value in DEFINES.items():
        assert name.startswith("FDP_"), f"{name}: ABI names start with FDP_"
        mirror = name[len("FDP_"):]
        assert hasattr(abi, mirror), f"{name} has no abi.{mirror}"
        assert getattr(abi, mirror) == _int(value), name


def test_every_enum_is_mirrored() -> None:
    enums = _enums()
    assert set(enums) == set(abi.ENUMS), "enums of fdp_abi.h and abi.ENUMS differ"
    for c_name, members in enums.items():
        prefix = "FDP_" + abi.ENUMS[c_name].__name__  # only for the message
        py = {e.name: e.value for e in abi.ENUMS[c_name]}
        common = _common_prefix(list(members))
        got = {}
        for k, v in members.items():
            if k.endswith("_MAX"):      # the bound, a module constant (abi.DROP_MAX)
                assert getattr(abi, k[len("FDP_"):]) == v, k
            else:
                got[k[len(common):]] = v
        assert got == py, f"{c_name} ({prefix})"


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:first.rfind("_", 0, n + 1) + 1]


def test_every_struct_is_mirrored() -> None:
    structs = _structs()
    assert set(structs) == set(abi.STRUCTS), "structs of fdp_abi.h and abi.STRUCTS differ"
    for c_name, fields in structs.items():
        py = abi.STRUCTS[c_name]._fields_
        assert [f[1] for f in fields] == [f[0] for f in py], c_name
        for (c_type, name, length), (_, py_type) in zip(fields, py):
            want = _ctype(c_type)
            if length is None:
                assert py_type is want, f"{c_name}.{name}"
            else:
                assert issubclass(py_type, ctypes.Array), f"{c_name}.{name} is an array"
                assert (py_type._type_, py_type._length_) == (want, length), f"{c_name}.{name}"


def test_every_map_is_mirrored() -> None:
    decls = re.findall(r'^FDP_MAP\("(\w+)",\s*([\w ]+?),\s*([\w ]+?),\s*(\w+),\s*(\w+)\);', _code(MAPS_H), re.M)
    assert [d[3] for d in decls] == list(abi.MAPS), "maps of bpf/lib/maps.h and abi.MAPS differ (or their order)"
    for kind, key, value, name, size in decls:
        spec = abi.MAPS[name]
        assert spec.kind == kind, name
        assert spec.key is _ctype(key), name
        assert spec.value is _ctype(value), name
        assert spec.max_entries == _int(size), name


def test_loader_wraps_exactly_the_maps() -> None:
    from weave_fdp.datapath.fastdp.loader import MAP_TYPES
    assert list(MAP_TYPES) == list(abi.MAPS)
    assert all(MAP_TYPES[n][2] == abi.MAPS[n].percpu for n in MAP_TYPES)


@pytest.mark.parametrize("helper", ["fdp_vni_src", "fdp_vni_dst"])
def test_vni_split_written_once_in_c(helper: str) -> None:
    """The programs split a VNI through tunnel.h's helpers only (as abi.split_vni does in Python)."""
    for prog in BPF_DIR.glob("*.c"):
        code = _code(prog.read_text())
        assert ">> FDP_SHORT_ID_BITS" not in code, prog.name
    assert f"{helper}(__u32 vni)" in (BPF_DIR / "lib" / "tunnel.h").read_text()


def test_vni_roundtrip() -> None:
    assert abi.vni(0x123, 0x456) == 0x456123
    assert abi.split_vni(0x456123) == (0x123, 0x456)
    assert abi.vni(5, 5) <= abi.VNI_MAX


def test_byte_order_helpers() -> None:
    v = abi.ip_to_be32("192.0.2.1")
    assert bytes(ctypes.c_uint32(v)) == bytes([192, 0, 2, 1])
    assert abi.be32_to_ip(v) == "192.0.2.1"
    assert abi.mac_str(abi.mac_bytes("0A:1b:2c:3d:4e:5f")) == "0a:1b:2c:3d:4e:5f"
