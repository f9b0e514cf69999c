"""The C source the loader hands to bcc, assembled from bpf/.

bcc rewrites map accesses (``map.lookup(&k)``) only in the main translation
unit, not in included headers, so the local ``#include "..."`` lines of the
programs are expanded here (each file once, like an include guard) and the
result compiled as one text. System includes (``<...>``) stay for clang.
"""

from __future__ import annotations

import re
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"
PROGRAM_FILES = ("encap_tc.c", "decap_tc.c", "underlay_tc.c")

_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def expand(path: Path, seen: set[Path] | None = None) -> str:
    """Text of ``path`` with its local includes inlined (each file at most once)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return ""
    seen.add(path)
    out: list[str] = [f'#line 1 "{path.name}"']
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        m = _LOCAL_INCLUDE.match(line)
        if m:
            out.append(expand(path.parent / m.group(1), seen))
            out.append(f'#line {lineno + 1} "{path.name}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def program_text(files: tuple[str, ...] = PROGRAM_FILES, bpf_dir: Path = BPF_DIR) -> str:
    """One compilation unit holding every program in ``files`` (they share maps)."""
    seen: set[Path] = set()
    return "".join(expand(bpf_dir / name, seen) for name in files)
