"""Timestep spacing and step variance of the residual refiner's sampler, same steps.

Refines one held-out demo reconstruction (``--quality-input``: the ``.npz`` with ``coarse``,
``original`` and ``labels`` that ``benchmarks/gpu_wheels.sh`` writes, sub-002 of the demo
cohort) with the shipped demo refiner, our wavefront plan and DDIM η = 1, once per
``spacing:steps[:variance]`` item (variance ``fixed``, the default, or ``analytic``), and
reports sharpness, noise std, white-matter noise KL and seam score
(``benchmarks/_quality.py``) next to the 1,000-step DDPM reference on the authors' traversal
measured by ``gpu_check.py`` part (c) (``--reference``: its JSON, for the ratios). Writes
``--out`` (JSON), a Markdown table beside it and a figure (axial slice and zoom of every run
with the original and the coarse input), so that the picture can be checked along with the
numbers. Also the background: mean and maximum of |y + 1| more than 3 voxels outside the
coarse input's brain.

    python benchmarks/sampler_spacing.py linear:10 quadratic:10 linear:20 quadratic:20 \
        quadratic:45 quadratic:10:analytic
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _quality import NoiseReference, quality  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent


def run(items: list[tuple[str, int, str]], input_path: Path, seed: int) -> tuple[list[dict], dict]:
    import torch
    from scipy import ndimage

    from realdeal.diffusion.denoiser import Denoiser
    from realdeal.diffusion.registry import make_sampler
    from realdeal.inference.plan import PlanConfig, make_plan
    from realdeal.inference.refine import refine_volume
    from realdeal.pipelines.refiner import RefinerPipeline

    with np.load(input_path) as f:
        x, orig, labels = (np.asarray(f[k]) for k in ("coarse", "original", "labels"))
    x, orig = x.astype(np.float32), orig.astype(np.float32)
    ref = NoiseReference.of(orig, np.isin(labels, (2, 41)))
    pipe = RefinerPipeline.from_checkpoint(ROOT / "src/realdeal/demo_checkpoints/refiner.pt")
    plan = make_plan(x.shape, PlanConfig(window=pipe.window, max_batch=8), coarse=x)
    background = ~ndimage.binary_dilation(x > -0.95, iterations=3)
    rows, volumes = [], {"original": orig, "coarse": x}
    for spacing, steps, variance in items:
        smp = make_sampler(
            "ddim", pipe.schedule, steps, eta=1.0, clip_x0=False, spacing=spacing,
            variance=variance,
        )  # fmt: skip
        t0 = time.perf_counter()
        with torch.no_grad():
            res = refine_volume(
                x, Denoiser(pipe.unet, pipe.schedule), smp, plan, seed=seed,
                device=torch.device("cpu"), show_progress=False, target=pipe.target,
                residual_scale=pipe.residual_scale,
            )  # fmt: skip
        bg = np.abs(res.refined[background] + 1)
        row = {"spacing": spacing, "steps": steps, "variance": variance,
               "timesteps": smp.timesteps(), "background_mean": float(bg.mean()),
               "background_max": float(bg.max()),
               "unet_evaluations": res.unet_evaluations,
               "seconds": time.perf_counter() - t0, **quality(res.refined, x, plan, ref)}  # fmt: skip
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        volumes[f"{spacing} {steps}" + (f" {variance}" * (variance != "fixed"))] = res.refined
    return rows, volumes


def figure(volumes: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orig = volumes["original"]
    z = orig.shape[2] // 2 + 6
    lo, hi = np.percentile(orig[orig > -0.95], [0.5, 99.5])
    fig, ax = plt.subplots(2, len(volumes), figsize=(3.0 * len(volumes), 6.2))
    for i, (name, v) in enumerate(volumes.items()):
        sl = np.rot90(v[:, :, z])
        ax[0, i].imshow(sl, cmap="gray", vmin=lo, vmax=hi)
        ax[0, i].set_title(name, fontsize=10)
        ax[1, i].imshow(sl[20:60, 25:65], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for a in ax[:, i]:
            a.axis("off")
    fig.suptitle(f"sub-002, axial slice {z} and a 40×40 zoom (DDIM η = 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(rows: list[dict], reference: dict | None) -> str:
    head = (
        "| spacing | steps | variance | U-Net evals | wall (s) | sharpness | noise std | "
        "noise KL WM | seam | background mean / max |"
    )
    lines = [head, "|---" * 10 + "|"]
    for r in rows:

        def ratio(k: str, r: dict = r) -> str:  # against the 1,000-step reference
            return f" ({r[k] / reference[k]:.2f}×)" if reference else ""

        lines.append(
            f"| {r['spacing']} | {r['steps']} | {r['variance']} | {r['unet_evaluations']:,} | "
            f"{r['seconds']:.0f} | {r['sharpness']:.4f}{ratio('sharpness')} | "
            f"{r['noise_std']:.4f}{ratio('noise_std')} | {r['noise_kl_wm']:.3f} | "
            f"{r['seam_score']:.3f} | {r['background_mean']:.4f} / {r['background_max']:.3f} |"
        )
    if reference:
        lines.append(
            f"| authors' traversal, DDPM (reference, H100) | 1000 | | {reference['evaluations']:,} | | "
            f"{reference['sharpness']:.4f} | {reference['noise_std']:.4f} | "
            f"{reference['noise_kl_wm']:.3f} | {reference['seam_score']:.3f} | |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", nargs="+", help="spacing:steps[:variance], e.g. quadratic:10:analytic")
    p.add_argument("--quality-input", type=Path, default=ROOT / ".device-wheels/quality_input.npz")
    p.add_argument(
        "--reference", type=Path, default=ROOT / "benchmarks/results/gpu_check-50926ca.json"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sampler_spacing.json")
    args = p.parse_args()
    parts = [i.split(":") for i in args.items]
    items = [(p[0], int(p[1]), p[2] if len(p) > 2 else "fixed") for p in parts]
    reference = None
    if args.reference.is_file():
        runs = json.loads(args.reference.read_text())["parts"]["c"]["runs"]
        ref = next(r for r in runs if r["plan"] == "official")
        reference = {**ref["quality"], "evaluations": ref["unet_evaluations"]}
    rows, volumes = run(items, args.quality_input, args.seed)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"rows": rows, "reference": reference}, indent=1) + "\n")
    tmp.replace(args.out)
    text = table(rows, reference)
    args.out.with_suffix(".md").write_text(text + "\n")
    figure(volumes, args.out.with_name(args.out.stem + "_sub-002.png"))
    print(text)


if __name__ == "__main__":
    main()
