"""Refinement plan counts: the authors' traversal (`--traversal official`) against our wavefront plan.

Two geometries: the HCP grid of the paper (224×288×224 at 0.7 mm, 64³ windows) and the 2 mm
cohort grid (96×112×96, 32³ windows). Background skipping uses a real brain mask: nilearn's
MNI152 (2009) brain mask at 1 mm, resampled (trilinear, threshold 0.5) to the grid's spacing
and centred on the grid (as :mod:`realdeal.data.cohort` places its brains). Prints a Markdown
table and writes JSON. No network is run; everything here is counting.

    PYTHONPATH=src python benchmarks/plan_counts.py [--out benchmarks/results/plan_counts.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np

from realdeal.data.transforms import CropPad, Resample
from realdeal.inference.masks import MaskConfig, in_support, plan_mask_shapes
from realdeal.inference.plan import Plan, PlanConfig, make_plan, official_plan

GEOMETRIES = {
    "HCP 0.7 mm": {"shape": (224, 288, 224), "spacing": 0.7, "window": 64, "max_batch": 32},
    "cohort 2 mm": {"shape": (96, 112, 96), "spacing": 2.0, "window": 32, "max_batch": 32},
}
STEPS = (1000, 100, 50, 20)


def mni_brain_mask(shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """MNI152 brain mask resampled to ``spacing`` mm and centred on a grid of ``shape``."""
    from nilearn import datasets

    img = datasets.load_mni152_brain_mask(resolution=1)
    m = np.asarray(img.get_fdata(), dtype=np.float32)
    spacing_in = tuple(float(v) for v in np.sqrt((img.affine[:3, :3] ** 2).sum(0)))
    rs = Resample(m.shape, spacing_in, (spacing,) * 3)  # type: ignore[arg-type]
    m = rs.forward(m, order=1, fill=0.0) > 0.5
    nz = np.argwhere(m)
    cp = CropPad.around_box(m.shape, shape, nz.min(0), nz.max(0) + 1)
    return cp.forward(m, False)


def row(name: str, plan: Plan) -> dict:
    s = plan.stats
    faces = Counter(len(m.known) for m in plan_mask_shapes(plan).elements() if m is not None)
    return {
        "schedule": name,
        **s.to_dict(),
        "unet_evaluations": {str(n): s.unet_evaluations(n) for n in STEPS},
        "network_calls": {str(n): s.network_calls(n) for n in STEPS},
        "known_faces": {str(k): v for k, v in sorted(faces.items())},
        "masks_in_training_support": all(
            in_support(m, plan.window_shape, MaskConfig()) for m in plan_mask_shapes(plan)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/plan_counts.json")
    args = ap.parse_args()

    results: dict[str, dict] = {}
    lines = []
    for geo, g in GEOMETRIES.items():
        t0 = time.perf_counter()
        brain = mni_brain_mask(g["shape"], g["spacing"])
        w, mb = g["window"], g["max_batch"]
        rows = [row("authors (official)", official_plan(g["shape"], w, max_batch=mb))]
        rows.append(
            row(
                f"ours, overlap {w // 4}, no skipping",
                make_plan(g["shape"], PlanConfig(window=w, max_batch=mb, skip_background=False)),
            )
        )
        for ov in (w // 2, 3 * w // 8, w // 4, w // 8):
            cfg = PlanConfig(window=w, overlap=ov, max_batch=mb)
            tag = " (default)" if ov == PlanConfig(window=w).resolved_overlap else ""
            rows.append(
                row(f"ours, overlap {ov}{tag}", make_plan(g["shape"], cfg, brain_mask=brain))
            )
        results[geo] = {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()},
            "brain_voxels": int(brain.sum()),
            "brain_mask": "nilearn MNI152 brain mask, resampled and centred",
            "seconds": round(time.perf_counter() - t0, 2),
            "plans": rows,
        }
        lines += [
            f"\n### {geo}: {'×'.join(map(str, g['shape']))}, {w}³ windows, max_batch {mb}, "
            f"brain {int(brain.sum()):,} voxels (MNI152 mask)\n",
            "| schedule | padded | windows run / skipped | waves | batches | "
            + " | ".join(f"U-Net evals @{n}" for n in STEPS)
            + " | computed / written | computed / volume | known faces 0/1/2/3 |",
            "|---" * (8 + len(STEPS)) + "|",
        ]
        for r in rows:
            faces = "/".join(str(r["known_faces"].get(str(k), 0)) for k in range(4))
            lines.append(
                f"| {r['schedule']} | {'×'.join(map(str, r['padded_shape']))} | "
                f"{r['windows_run']} / {r['windows_skipped']} | {r['waves']} | {r['batches']} | "
                + " | ".join(f"{r['unet_evaluations'][str(n)]:,}" for n in STEPS)
                + f" | {r['redundancy']:.2f} | {r['redundancy_volume']:.2f} | {faces} |"
            )
    print("\n".join(lines))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
