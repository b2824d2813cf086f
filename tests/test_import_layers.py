"""Imports between portagpt's modules point down the layers: no cycle, in-function imports included.

Every module under ``src/portagpt`` is parsed with ``ast``; every ``import`` and
``from ... import`` anywhere in it (module level, inside functions, under
``TYPE_CHECKING``) that names a portagpt module becomes an edge, relative
imports resolved against the module's package. ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg``. Importing a
module also runs its package's ``__init__``, but that is not counted as an
edge: a package whose ``__init__`` re-exports its children would otherwise
form a cycle with every child.
"""

from __future__ import annotations

import ast
from pathlib import Path

import portagpt

ROOT = Path(portagpt.__file__).parent
PACKAGE = "portagpt"


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The portagpt modules ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import portagpt.a.b as x`, attributes
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    names = set(modules)
    return {name: imports_of(name, path, names) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_modules_counting_in_function_imports():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_relative_and_in_function_imports(tmp_path):
    """The checker itself: a cycle hidden in a function, through a relative import, is found."""
    pkg = tmp_path / "portagpt"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..top import g\n")
    (pkg / "top.py").write_text("def g():\n    from .sub.a import x\n")
    modules = {
        "portagpt": pkg / "__init__.py",
        "portagpt.sub": pkg / "sub" / "__init__.py",
        "portagpt.sub.a": pkg / "sub" / "a.py",
        "portagpt.sub.b": pkg / "sub" / "b.py",
        "portagpt.top": pkg / "top.py",
    }
    graph = {m: imports_of(m, p, set(modules)) for m, p in modules.items()}
    assert graph["portagpt.sub.a"] == {"portagpt.sub.b"}
    assert graph["portagpt.sub.b"] == {"portagpt.top"}
    assert graph["portagpt.top"] == {"portagpt.sub.a"}
    assert find_cycle(graph) == ["portagpt.sub.a", "portagpt.sub.b", "portagpt.top", "portagpt.sub.a"]
    graph["portagpt.top"] = set()
    assert find_cycle(graph) is None
