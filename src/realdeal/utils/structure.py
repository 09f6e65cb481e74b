"""The package's own shape: which subpackage imports which, and its longest functions.

Used by ``tests/test_architecture.py`` (no import may run against the layering below) and by
``benchmarks/structure.py`` (prints the import graph and the longest functions). Reads the
source with :mod:`ast`; imports nothing from realdeal.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

#: The layers, lowest first. A module may import from its own layer and the ones below.
#: ``training`` sits high because it uses everything under it; ``demo`` and the command line
#: run training and so sit above it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "utils", "config"),
    ("runtime",),
    ("data",),
    ("models",),
    ("diffusion",),
    ("presets",),
    ("pipelines",),
    ("metrics",),
    ("report",),
    ("official",),
    ("training",),
    ("demo",),
    ("commands", "cli", "__main__"),
)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def layer_of(unit: str) -> int:
    for i, names in enumerate(LAYERS):
        if unit in names:
            return i
    raise KeyError(f"{unit!r} has no layer in realdeal.utils.structure.LAYERS")


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


def backward_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    """Imports from a lower layer into a higher one (the public re-exports of the package's
    ``__init__`` are the one allowed exception: they are lazy and nothing imports through them
    inside realdeal)."""
    bad = []
    for imp in imports(root):
        src, dst = imp.source_unit, imp.target_unit
        if "(top)" in (src, dst) or src == dst:
            continue
        if layer_of(dst) > layer_of(src):
            bad.append(imp)
    return bad


def longest_functions(root: Path = PACKAGE_ROOT, most: int = 10) -> list[tuple[int, str]]:
    """The ``most`` longest functions and methods as (lines, ``file:line name``)."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                rows.append((node.end_lineno - node.lineno + 1, where))
    return sorted(rows, key=lambda r: (-r[0], r[1]))[:most]
