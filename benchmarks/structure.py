"""The package's shape: the subpackage import graph, imports against the layering and the
longest functions. Prints Markdown; ``--json PATH`` also writes JSON.

    python benchmarks/structure.py [--most 10] [--json benchmarks/results/structure.json]
"""

from __future__ import annotations

import argparse
import json

from realdeal.utils.structure import LAYERS, backward_imports, graph, layer_of, longest_functions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--most", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    edges = graph()
    order = sorted(edges, key=lambda u: (layer_of(u), u))
    print("## Import graph (subpackage → what it imports), lowest layer first\n")
    print("| layer | subpackage | imports |\n|---|---|---|")
    for unit in order:
        print(f"| {layer_of(unit)} | {unit} | {', '.join(sorted(edges[unit], key=layer_of))} |")
    bad = backward_imports()
    print(f"\n## Imports against the layering: {len(bad)}\n")
    for i in bad:
        print(f"- {i.module}:{i.line} → {i.target}")
    rows = longest_functions(most=args.most)
    print(f"\n## The {args.most} longest functions\n\n| lines | function |\n|---|---|")
    for n, where in rows:
        print(f"| {n} | {where} |")
    if args.json:
        data = {
            "layers": [list(names) for names in LAYERS],
            "graph": {u: sorted(edges[u]) for u in order},
            "backward_imports": [f"{i.module}:{i.line} -> {i.target}" for i in bad],
            "longest_functions": [{"lines": n, "where": w} for n, w in rows],
        }
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
