"""The package's own shape: which subpackage imports which, imports hidden in functions,
flags written by hand, and the longest functions.

Used by ``benchmarks/structure.py`` (prints them) and ``tests/test_architecture.py``. The
layering itself is a set of import-linter contracts in ``pyproject.toml``
(``[tool.importlinter]``), checked by ``lint-imports``. Reads the source with :mod:`ast`;
imports nothing from realdeal.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Import:
    """``module`` (dotted, inside realdeal) imports ``target`` at ``line``."""

    module: str
    target: str
    line: int

    @property
    def source_unit(self) -> str:
        return _unit(self.module)

    @property
    def target_unit(self) -> str:
        return _unit(self.target)


def _unit(module: str) -> str:
    """The top-level part of realdeal a dotted module belongs to (``(top)`` for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(top)"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    """Every import of a realdeal module by a realdeal module (absolute and relative)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
                # ``from realdeal import x`` imports the submodule realdeal.x when there is one
                if target == "realdeal":
                    names = [n for n in names[1:] if (root / n.split(".")[1]).exists()] or [target]
                else:
                    names = [target]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [Import(module, n, node.lineno) for n in names if n.startswith("realdeal")]
    return found


def graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Subpackage → the subpackages it imports (itself and the package root left out)."""
    edges: dict[str, set[str]] = {}
    for imp in imports(root):
        src, dst = imp.source_unit, imp.target_unit
        if src not in ("(top)", dst) and dst != "(top)":
            edges.setdefault(src, set()).add(dst)
    return edges


def longest_functions(root: Path = PACKAGE_ROOT, most: int = 10) -> list[tuple[int, str]]:
    """The ``most`` longest functions and methods as (lines, ``file:line name``)."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                rows.append((node.end_lineno - node.lineno + 1, where))
    return sorted(rows, key=lambda r: (-r[0], r[1]))[:most]


def local_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    """Imports of realdeal modules made inside a function body (they hide the dependency graph
    from a reader of the module's head; import-linter still sees them)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("realdeal")
                ):
                    found.append(Import(module, node.module or ".", node.lineno))
                elif isinstance(node, ast.Import):
                    found += [
                        Import(module, a.name, node.lineno)
                        for a in node.names
                        if a.name.startswith("realdeal")
                    ]
    return found


def argument_calls(root: Path = PACKAGE_ROOT) -> list[str]:
    """Every ``….add_argument(…)`` call site in the source, as ``file:line`` (a generator's one
    call in a loop counts once: these are the flags written by hand)."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
            ):
                rows.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return rows


def lines_of(unit: str, root: Path = PACKAGE_ROOT) -> int:
    """Source lines in a subpackage (``diffusion``) or top-level module (``demo``)."""
    target = root / unit
    paths = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return sum(len(p.read_text().splitlines()) for p in paths)
