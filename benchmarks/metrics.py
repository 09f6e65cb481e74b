"""Time the paired metric suite on one 224×288×224 pair and print a per-metric breakdown.

Uses the synthetic phantom (:mod:`realdeal.metrics.phantom`) with a blurred candidate, the
paper's settings (1,000 patches, 64³ / 64² windows, dipy NLM), no deep networks by default
(``--lpips`` adds LPIPS, which needs the AlexNet weights). Writes the table as JSON.

    PYTHONPATH=src python benchmarks/metrics.py [--out benchmarks/results/metrics.json] [--lpips]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from scipy import ndimage

from realdeal.metrics.phantom import make_phantom
from realdeal.metrics.suite import PairedConfig, paired_subject


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/metrics.json")
    ap.add_argument("--shape", type=int, nargs=3, default=(224, 288, 224))
    ap.add_argument("--lpips", action="store_true", help="include LPIPS (needs AlexNet weights)")
    args = ap.parse_args()

    original, _, labels = make_phantom(tuple(args.shape))
    candidate = ndimage.gaussian_filter(original, 1.0).astype(np.float32)
    model = None
    if args.lpips:
        from realdeal.metrics.lpips import load_lpips

        model = load_lpips()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records = paired_subject(
        "bench",
        original,
        labels,
        {"candidate": candidate},
        PairedConfig(lpips=args.lpips),
        model,
        timings,
    )
    total = time.perf_counter() - t0

    print(f"paired suite, one {'×'.join(map(str, args.shape))} pair ({len(records)} values)")
    print(f"{'metric':<12}{'seconds':>10}{'share':>8}")
    for k, v in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"{k:<12}{v:>10.2f}{100 * v / total:>7.0f}%")
    print(f"{'total':<12}{total:>10.2f}")
    with open(args.out, "w") as f:
        json.dump(
            {
                "shape": list(args.shape),
                "total_s": total,
                "per_metric_s": timings,
                "machine": platform.processor() or platform.machine(),
                "lpips": args.lpips,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
