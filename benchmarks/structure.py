"""The package's shape: the subpackage import graph, the import contracts, imports hidden in
functions, flags written by hand, lines per subpackage and the longest functions. Prints
Markdown; ``--json PATH`` also writes JSON. ``--src DIR`` measures another checkout's
``src/realdeal`` (for a before/after table).

    python benchmarks/structure.py [--src src/realdeal] [--most 10] [--json benchmarks/results/structure.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from realdeal.utils.structure import (
    PACKAGE_ROOT,
    argument_calls,
    graph,
    lines_of,
    local_imports,
    longest_functions,
)


def contracts(root: Path) -> str:
    """``lint-imports``'s verdict line for the checkout that holds ``root``."""
    checkout = root.parents[1]
    if not (checkout / "pyproject.toml").read_text().count("[tool.importlinter]"):
        return "no contracts"
    env = {"PYTHONPATH": str(root.parent)}
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=checkout, env=env, capture_output=True, text=True)
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("Contracts:")]
    return last[0] if last else proc.stdout[-500:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=PACKAGE_ROOT, help="a realdeal package folder")
    ap.add_argument("--most", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    root = args.src.resolve()
    edges = graph(root)
    local = local_imports(root)
    calls = argument_calls(root)
    units = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    sizes = {u: lines_of(u, root) for u in units}
    print("## Import graph (subpackage → what it imports)\n")
    print("| subpackage | imports |\n|---|---|")
    for unit in sorted(edges):
        print(f"| {unit} | {', '.join(sorted(edges[unit]))} |")
    verdict = contracts(root)
    print(f"\n## Import contracts (`lint-imports`): {verdict}\n")
    print("## Counts\n\n| measure | value |\n|---|---|")
    for unit in units:
        print(f"| lines in `{unit}/` | {sizes[unit]} |")
    print(f"| `add_argument` calls written by hand | {len(calls)} |")
    print(f"| realdeal imports inside functions | {len(local)} |")
    by_file = Counter(f"{i.module}" for i in local).most_common(5)
    print(f"\nMost function-local imports: {', '.join(f'{m} ({n})' for m, n in by_file)}")
    rows = longest_functions(root, most=args.most)
    print(f"\n## The {args.most} longest functions\n\n| lines | function |\n|---|---|")
    for n, where in rows:
        print(f"| {n} | {where} |")
    if args.json:
        data = {
            "graph": {u: sorted(edges[u]) for u in sorted(edges)},
            "contracts": verdict,
            "lines": sizes,
            "add_argument_calls": len(calls),
            "function_local_imports": len(local),
            "longest_functions": [{"lines": n, "where": w} for n, w in rows],
        }
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
