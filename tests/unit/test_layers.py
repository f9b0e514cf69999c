"""The import rules of DESIGN.md/STYLE.md, checked mechanically.

Only the compile/probe children in datapath/fastdp import bcc, only plumbing imports pyroute2, only cli/ and
dashboard/ import rich, and imports go one way: the lower layers never import the
router, the CLI or the dashboard.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "weave_fdp"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> list[tuple[str, set[str]]]:
    return [(str(p.relative_to(PKG.parent)), _imports(p)) for p in sorted(PKG.rglob("*.py"))]


MODULES = _modules()

# library -> the only folders allowed to import it
OWNERS = {
    # only the short-lived child processes: the router and the probe never map bcc/LLVM
    "bcc": ("weave_fdp/datapath/fastdp/compile.py", "weave_fdp/datapath/fastdp/bcc_check.py"),
    "pyroute2": ("weave_fdp/plumbing/",),
    "rich": ("weave_fdp/cli/", "weave_fdp/dashboard/"),
}

# lower layer -> upper layers it must not import
LOWER = {
    "weave_fdp/plumbing/": ("weave_fdp.router", "weave_fdp.cli", "weave_fdp.dashboard", "weave_fdp.datapath"),
    "weave_fdp/datapath/": ("weave_fdp.router", "weave_fdp.cli", "weave_fdp.dashboard"),
    "weave_fdp/probe/": ("weave_fdp.router", "weave_fdp.cli", "weave_fdp.dashboard"),
    "weave_fdp/router/": ("weave_fdp.cli", "weave_fdp.dashboard", "weave_fdp.cni"),
    "weave_fdp/engine/": ("weave_fdp.router", "weave_fdp.cli", "weave_fdp.dashboard", "weave_fdp.datapath",
                          "weave_fdp.plumbing"),
    "weave_fdp/cni/": ("weave_fdp.cli", "weave_fdp.dashboard"),
    "weave_fdp/dashboard/": ("weave_fdp.cli",),
}


def test_every_module_was_read() -> None:
    assert len(MODULES) > 50


@pytest.mark.parametrize("lib", sorted(OWNERS))
def test_library_has_one_owner(lib: str) -> None:
    offenders = [path for path, names in MODULES
                 if any(n == lib or n.startswith(lib + ".") for n in names)
                 and not path.startswith(OWNERS[lib])]
    assert offenders == [], f"{lib} imported outside {OWNERS[lib]}"


@pytest.mark.parametrize("layer", sorted(LOWER))
def test_imports_go_one_way(layer: str) -> None:
    offenders = [(path, sorted(n for n in names if n.startswith(LOWER[layer])))
                 for path, names in MODULES
                 if path.startswith(layer) and any(n.startswith(LOWER[layer]) for n in names)]
    assert offenders == []


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from pkg import mod`` counts as mod; imports
    under TYPE_CHECKING count too: a cycle of type hints is still a knot to untie)."""
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph: dict[str, set[str]] = {}
    for name, p in mods.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def test_no_import_cycles() -> None:
    graph = _module_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
