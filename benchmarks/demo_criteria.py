"""The demo's realism criteria of demo models, per checkpoint: a curve against training compute.

For each LDM checkpoint: ``--samples`` volumes (DDIM 50, batched) against every real subject of
the prepared dataset, weight-free patch-statistics features (the demo's unpaired suite: 250
patches per axis and volume, k = 10) → coverage, density and FD per axis.
For each refiner checkpoint: the held-out reconstructions refined with the demo's settings
(DDIM η = 1, 10 steps) against the originals (the demo's paired suite, no LPIPS) → sharpness
÷ original's, white-matter noise KL, and whole-brain HOG distance ÷ the reconstruction's.

Writes JSON (``--out``), a Markdown table (same name, ``.md``) and a PNG of each measure against
training steps (``.png``), and prints the table::

    python benchmarks/demo_criteria.py --data training-runs/demo/data \
        --ldm src/realdeal/demo_checkpoints/ldm.pt snap/ldm-2000.pt training-runs/demo/ldm/checkpoint.pt \
        --refiner src/realdeal/demo_checkpoints/refiner.pt training-runs/demo/refiner/checkpoint.pt \
        --out benchmarks/results/demo_criteria.json

Coverage grows with the number of generated volumes (k-NN balls of the real patches are
covered by more candidates): compare rows at the same ``--samples``. On the demo cohort the
autoencoder's own reconstructions of all 16 subjects reach coverage 0.65-0.70 and of 3
subjects 0.27-0.30 (k = 10), the ceiling for raw LDM samples decoded by that autoencoder.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _summary(result, set_name: str, metric: str) -> list[float]:
    rows = [r for r in result.summary if r["set"] == set_name and r["metric"] == metric]
    rows.sort(key=lambda r: str(r.get("axis")))
    return [float(r["mean"]) for r in rows]


@functools.cache
def _meta(path: Path) -> tuple[int, int | None]:
    """(step, training batch) of a checkpoint, read once (the batch from its run config, which
    checkpoints store as JSON text; None if it has none)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ckpt.get("config") or {}
    if isinstance(cfg, str):
        cfg = json.loads(cfg)
    return int(ckpt["step"]), (cfg.get("train") or {}).get("batch_size")


def _step(path: Path) -> int:
    return _meta(path)[0]


def _batch(path: Path) -> int | None:
    return _meta(path)[1]


def _seen(r: dict) -> int:
    """Training samples seen: steps × batch (rows written before batch was recorded: batch 4,
    every earlier run's), plus ``samples_before`` for a run started from another's weights."""
    return r["step"] * (r.get("batch") or 4) + r.get("samples_before", 0)


def ldm_row(ckpt: Path, data: Path, n: int, seed: int) -> dict:
    from realdeal.data.dataset import PreparedDataset
    from realdeal.metrics import suite
    from realdeal.metrics.subjects import find_set
    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    ds = PreparedDataset(data)
    pipe = LatentDiffusionPipeline.from_checkpoint(ckpt)
    ref = ds.load_image(ds.ids()[0])
    t0 = time.perf_counter()
    imgs = pipe(n, sampler="ddim", steps=50, seed=seed, batch_size=8, show_progress=False)
    t_sample = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(imgs):
            ref.with_data(img.numpy()).save(Path(tmp) / f"sample_{i:03d}.nii.gz")
        res = suite.evaluate_unpaired(
            find_set("real", ds.root / "images"),
            [find_set("sample", tmp)],
            suite.UnpairedConfig(features="patchstats", seed=seed, n_bootstrap=0, n_patches_2d=250),
        )
        background = _background(imgs.numpy(), ds)
    return {
        "model": "ldm",
        "checkpoint": str(ckpt),
        "step": _step(ckpt),
        "samples": n,
        "sample_seconds": round(t_sample, 1),
        "coverage_k10": _summary(res, "sample", "coverage_k10_patchstats"),
        "density_k10": _summary(res, "sample", "density_k10_patchstats"),
        "fd_patchstats": _summary(res, "sample", "fd_patchstats"),
        "background_abs_dev": background,
    }


def _background(imgs: np.ndarray, ds) -> float:
    """Mean |x − (−1)| outside every real subject's brain mask dilated by 2 voxels (0 = clean)."""
    from scipy import ndimage

    union = np.zeros(ds.shape, bool)
    for sid in ds.ids():
        union |= ds.load_image(sid).data > -0.99
    outside = ~ndimage.binary_dilation(union, iterations=2)
    return float(np.mean([np.abs(im[outside] + 1).mean() for im in imgs]))


def refiner_row(ckpt: Path, data: Path, seed: int, subjects: int | None) -> dict:
    from realdeal.data.dataset import PreparedDataset
    from realdeal.metrics import suite
    from realdeal.metrics.sharpness import SharpnessConfig
    from realdeal.metrics.subjects import find_set
    from realdeal.pipelines.refiner import RefineSettings, refine_paths

    ds = PreparedDataset(data)
    test = ds.ids("test")[:subjects] if subjects else ds.ids("test")
    root = ds.root
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        refine_paths(
            ckpt,
            [str(root / "reconstructions" / f"{s}.nii.gz") for s in test],
            Path(tmp),
            RefineSettings(sampler="ddim", steps=10, eta=1.0, seed=seed),
        )
        t_refine = time.perf_counter() - t0
        res = suite.evaluate_paired(
            find_set("originals", [root / "images" / f"{s}.nii.gz" for s in test]),
            [
                find_set(
                    "reconstruction", [root / "reconstructions" / f"{s}.nii.gz" for s in test]
                ),
                find_set("refined", [Path(tmp) / f"{s}.nii.gz" for s in test]),
            ],
            find_set("labels", [root / "labels" / f"{s}.nii.gz" for s in test]),
            suite.PairedConfig(
                lpips=False,
                seed=seed,
                seam_window=ds.window,
                sharpness=SharpnessConfig(patch_size=64),
            ),
        )
    sharp = {k: _summary(res, k, "sharpness") for k in ("original", "reconstruction", "refined")}
    hog = {k: _summary(res, k, "hog_brain") for k in ("reconstruction", "refined")}
    return {
        "model": "refiner",
        "checkpoint": str(ckpt),
        "step": _step(ckpt),
        "subjects": test,
        "refine_seconds": round(t_refine, 1),
        "sharpness": sharp,
        "sharpness_ratio": sharp["refined"][0] / sharp["original"][0]
        if sharp["original"]
        else None,
        "noise_kl_wm": _summary(res, "refined", "kl_white_matter"),
        "noise_kl_wm_reconstruction": _summary(res, "reconstruction", "kl_white_matter"),
        "hog_ratio": [a / b for a, b in zip(hog["refined"], hog["reconstruction"], strict=True)],
        "psnr": _summary(res, "refined", "psnr"),
    }


def _fmt(v) -> str:
    if isinstance(v, list):
        return "/".join(f"{x:.3g}" for x in v)
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    out = []
    ldm = [r for r in rows if r["model"] == "ldm"]
    if ldm:
        out += [
            "| LDM checkpoint | step | batch | samples seen | samples | coverage k=10 d0/d1/d2 | density k=10 | FD patch-stats | background |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['checkpoint']} | {r['step']} | {r.get('batch') or 4} | {_seen(r):,} | {r['samples']} | {_fmt(r['coverage_k10'])} "
            f"| {_fmt(r['density_k10'])} | {_fmt(r['fd_patchstats'])} | {_fmt(r['background_abs_dev'])} |"
            for r in ldm
        ]
        out += [
            "",
            "Coverage and density count a copy of a training subject as realistic. The GPU LDMs' "
            "samples are such copies (`memorization.md`): their coverage gains are "
            "copies getting closer, not new brains.",
        ]
        out.append("")
    ref = [r for r in rows if r["model"] == "refiner"]
    if ref:
        out += [
            "| refiner checkpoint | step | batch | samples seen | sharpness ÷ original | noise KL WM | HOG whole ÷ recon d0/d1/d2 | PSNR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['checkpoint']} | {r['step']} | {r.get('batch') or 4} | {_seen(r):,} | {_fmt(r['sharpness_ratio'])} "
            f"| {_fmt(r['noise_kl_wm'])} | {_fmt(r['hog_ratio'])} | {_fmt(r['psnr'])} |"
            for r in ref
        ]
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("ldm", "coverage_k10", "LDM coverage k=10 (mean of axes)", 0.5, "≥"),
        ("refiner", "sharpness_ratio", "refined sharpness ÷ original", 0.8, "≥"),
        ("refiner", "noise_kl_wm", "noise KL, white matter", 0.1, "≤"),
        ("refiner", "hog_ratio", "HOG ÷ reconstruction (worst axis)", 0.9, "≤"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.6))
    for ax, (model, key, title, target, sense) in zip(axes, panels, strict=True):
        runs: dict[str, list] = {}  # one line per training run (checkpoint folder or file)
        for r in rows:
            if r["model"] == model and r.get(key) is not None:
                run = str(Path(r["checkpoint"].split("@")[0]).parent)
                runs.setdefault(run, []).append((_seen(r), r[key]))
        for run, pts in runs.items():
            pts.sort()
            ys = [
                (max(v) if key == "hog_ratio" else float(np.mean(v))) if isinstance(v, list) else v
                for _, v in pts
            ]
            ax.plot([p[0] for p in pts], ys, "o-" if len(pts) > 1 else "*", ms=8, label=run)
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"required {sense} {target}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training samples seen (steps × batch)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        # below the axes: inside, the legend hid the points it names
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="the demo's prepared dataset")
    ap.add_argument("--ldm", nargs="*", default=[], type=Path)
    ap.add_argument("--refiner", nargs="*", default=[], type=Path)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--subjects", type=int, help="held-out subjects to refine (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("demo_criteria.json"))
    args = ap.parse_args(argv)
    rows = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    done = {(r["model"], r["checkpoint"], r["step"]) for r in rows}
    for kind, ckpts in (("ldm", args.ldm), ("refiner", args.refiner)):
        for ckpt in ckpts:
            if (kind, str(ckpt), _step(ckpt)) in done:
                continue
            print(f"evaluating {kind} {ckpt} …", file=sys.stderr, flush=True)
            row = (
                ldm_row(ckpt, args.data, args.samples, args.seed)
                if kind == "ldm"
                else refiner_row(ckpt, args.data, args.seed, args.subjects)
            )
            row["batch"] = _batch(ckpt)
            rows.append(row)
            args.out.write_text(json.dumps({"rows": rows}, indent=1))
    text = table(rows)
    args.out.with_suffix(".md").write_text(text + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
