"""What a perfect refiner would score on the demo's paired criteria.

The demo cohort is synthetic, so the ideal output of a refiner is known: the held-out subject
itself, with the same anatomy, bias field, contrast, gain and noise level, under an
**independent draw of its scanner noise** (another scan of the same head). No refiner can
reproduce the original's noise voxel for voxel, only its statistics, so this "oracle" is what
the paired metrics can reach at best: its HOG distance to the original, divided by the
reconstruction's, is the floor of the demo's criterion "HOG ratio ≤ 0.9"; its sharpness is
the original's by construction; its PSNR is the ceiling for a refiner that adds real noise.

For each held-out subject of the prepared dataset (``--data``) the cohort subject is rebuilt
(:func:`realdeal.data.cohort._subject`, checked to reproduce the cohort's file) with
``--draws`` other noise seeds, mapped onto the prepared grid by the subject's own transform
(checked to reproduce ``images/``), and scored with the demo's paired suite against the
originals, next to the reconstructions and any refined sets given as ``--refined NAME=DIR``
(e.g. the ``refined/test`` folders of demo runs). Writes ``--out`` (JSON) and a Markdown
table beside it::

    python benchmarks/oracle_refiner.py --data training-runs/demo/data \
        --cohort training-runs/demo/cohort --refined "10 steps=demo-output/refined/test"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from _quality import save  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent
NOISE_SEED_BASE = 10_000  # far from the cohort's own seeds (drawn below 2³¹ from its generator)


def oracle_volumes(data: Path, cohort: Path, draws: int, tmp: Path) -> dict[str, list[Path]]:
    """``{"oracle k": [prepared-grid file per held-out subject]}`` for k = 1 … ``draws``."""
    import nibabel as nib

    from realdeal.config import from_dict
    from realdeal.data.cohort import CohortConfig, _subject, load_sources
    from realdeal.data.dataset import PreparedDataset
    from realdeal.data.io import Volume, load_volume

    ds = PreparedDataset(data)
    meta = json.loads((cohort / "cohort.json").read_text())
    cfg = from_dict(CohortConfig, meta["config"])
    sources = load_sources(cfg)
    out: dict[str, list[Path]] = {f"oracle {k + 1}": [] for k in range(draws)}
    for sid in ds.ids("test"):
        i = int(sid.split("-")[1])
        src = sources[i % len(sources)]
        rec, image = ds.record(sid), ds.load_image(sid)
        stored = np.asarray(nib.load(cohort / f"{sid}_T1w.nii.gz").dataobj, np.float32)
        for k in range(-1, draws):
            x, _, _ = _subject(src, cfg, i, None if k < 0 else NOISE_SEED_BASE + 97 * i + k)
            path = tmp / f"cohort-{k}-{sid}.nii.gz"
            Volume(x, src.affine).save(path)
            vol = load_volume(path)
            prepared = rec.transform.forward_image(vol.data)
            if k < 0:  # the subject's own seed must give back the cohort file and the image
                if not np.allclose(x, stored, atol=1e-3):
                    raise SystemExit(f"{sid}: rebuilding the cohort subject does not reproduce it")
                if not np.allclose(prepared, image.data, atol=1e-4):
                    raise SystemExit(f"{sid}: its transform does not reproduce images/{sid}")
                continue
            dst = tmp / f"oracle-{k + 1}" / f"{sid}.nii.gz"
            dst.parent.mkdir(exist_ok=True)
            Volume(prepared.astype(np.float32), image.affine).save(dst)
            out[f"oracle {k + 1}"].append(dst)
        print(f"  {sid}: {draws} noise draws", flush=True)
    return out


def score(data: Path, sets: dict[str, list[Path]], workers: int, seed: int) -> dict:
    from realdeal.data.dataset import PreparedDataset
    from realdeal.metrics import suite
    from realdeal.metrics.sharpness import SharpnessConfig
    from realdeal.metrics.subjects import find_set

    ds = PreparedDataset(data)
    test = ds.ids("test")
    root = ds.root
    patch = min(64, *ds.shape) // 8 * 8  # as realdeal.demo._evaluate
    res = suite.evaluate_paired(
        find_set("originals", [root / "images" / f"{s}.nii.gz" for s in test]),
        [find_set(name, files) for name, files in sets.items()],
        find_set("labels", [root / "labels" / f"{s}.nii.gz" for s in test]),
        suite.PairedConfig(
            lpips=False,
            seed=seed,
            seam_window=ds.window,
            sharpness=SharpnessConfig(patch_size=patch),
        ),
        workers=workers,
    )
    return {(d["set"], d["metric"], d["axis"]): d["mean"] for d in res.summary}


def rows(means: dict, names: list[str]) -> list[dict]:
    axes = ("dim0", "dim1", "dim2")
    out = []
    for name in names:
        out.append(
            {
                "set": name,
                "sharpness_ratio": means[(name, "sharpness", "")]
                / means[("original", "sharpness", "")],
                "hog_ratio": [
                    means[(name, "hog_brain", a)] / means[("reconstruction", "hog_brain", a)]
                    for a in axes
                ],
                "hog": [means[(name, "hog_brain", a)] for a in axes],
                "noise_kl_wm": means[(name, "kl_white_matter", "")],
                "noise_kl_ventricles": means[(name, "kl_lateral_ventricles", "")],
                "psnr": means[(name, "psnr", "")],
                "ssim": means[(name, "ssim", "")],
                "seam": means[(name, "seam", "")],
            }
        )
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| set | sharpness ÷ original | HOG whole brain ÷ reconstruction d0/d1/d2 | noise KL WM | "
        "noise KL ventricles | PSNR (dB) | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['set']} | {r['sharpness_ratio']:.3f} | "
            f"{'/'.join(f'{h:.3f}' for h in r['hog_ratio'])} | {r['noise_kl_wm']:.4f} | "
            f"{r['noise_kl_ventricles']:.4f} | {r['psnr']:.2f} | {r['ssim']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the demo's prepared dataset")
    p.add_argument("--cohort", type=Path, required=True, help="the cohort it was prepared from")
    p.add_argument("--refined", nargs="*", default=[], metavar="NAME=DIR")
    p.add_argument("--draws", type=int, default=2, help="independent noise draws per subject")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/oracle_refiner.json")
    args = p.parse_args(argv)
    from realdeal.data.dataset import PreparedDataset

    test = PreparedDataset(args.data).ids("test")
    sets: dict[str, list[Path]] = {
        "reconstruction": [args.data / "reconstructions" / f"{s}.nii.gz" for s in test]
    }
    for item in args.refined:
        name, _, folder = item.partition("=")
        if not folder:
            p.error(f"--refined takes NAME=DIR, got {item!r}")
        sets[name] = [Path(folder) / f"{s}.nii.gz" for s in test]
    with tempfile.TemporaryDirectory() as tmp:
        print("rebuilding the held-out subjects with new noise:", flush=True)
        sets.update(oracle_volumes(args.data, args.cohort, args.draws, Path(tmp)))
        means = score(args.data, sets, args.workers, args.seed)
    table = rows(means, list(sets))
    md = markdown(table)
    result = {"subjects": test, "draws": args.draws, "rows": table}
    return save(args.out, result, md)


if __name__ == "__main__":
    sys.exit(main())
