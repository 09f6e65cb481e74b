"""``realdeal evaluate`` as one process and under torchrun with 2 and 4 processes, side by side.

Builds a synthetic cohort (``--subjects`` phantoms of ``--shape`` from
:mod:`realdeal.metrics.phantom`, with labels and a blurred and a renoised version), then runs
``realdeal evaluate paired`` (given labels) and ``realdeal evaluate unpaired --features
patchstats`` (``--networks``: LPIPS in the paired mode and FID's Inception features, with the
weights of ``--weights-dir`` or random ones of the real layouts) with
1, 2 and 4 processes, each with one CPU thread and ``--workers 1``, so that only the ranks
split the work. Reports the command's wall time (start-up and torchrun included), the part the
ranks share (paired: the per-subject metrics; unpaired: the patch features) and the part rank 0
does alone afterwards (the tables: bootstrap intervals; FD and PRDC with jackknife intervals),
from ``results.json``'s ``timings``, and checks that ``tables.md``, ``summary.csv`` and
``per_subject.csv`` are identical byte for byte. Prints a Markdown table and
writes it with the JSON to ``--out`` (``.md`` and ``.json``).

    python benchmarks/evaluate_ranks.py --subjects 8 --shape 96 112 96 \
        --out benchmarks/results/evaluate_ranks
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from realdeal.metrics.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("tables.md", "summary.csv", "per_subject.csv")


def cohort(root: Path, n: int, shape: tuple[int, int, int]) -> dict[str, Path]:
    """``n`` phantoms: originals, labels, blurred and renoised versions (2.5 mm voxels)."""
    dirs = {k: root / k for k in ("originals", "labels", "blurred", "renoised")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    for i in range(n):
        img, clean, lab = make_phantom(shape, noise=0.03, seed=i)
        noise = np.random.default_rng(1000 + i).normal(0, 0.03, shape)
        data = {
            "originals": img,
            "labels": lab.astype(np.int16),
            "blurred": ndimage.gaussian_filter(img, 1.0).astype(np.float32),
            "renoised": (clean + noise).astype(np.float32),
        }
        for k, v in data.items():
            nib.save(nib.Nifti1Image(v, affine), str(dirs[k] / f"sub-{i:03d}.nii.gz"))
    return dirs


def random_weights(folder: Path) -> Path:
    """AlexNet and FID-Inception weight files with random values (the real key sets): the
    networks cost what the real ones cost."""
    import torch
    import torchvision

    from realdeal.metrics.fid import build_fid_inception
    from realdeal.metrics.weights import ALEXNET, FID_INCEPTION

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / ALEXNET.name)
    torch.save(build_fid_inception().state_dict(), folder / FID_INCEPTION.name)
    return folder


def evaluate(args: list[str], nproc: int, out: Path) -> dict:
    """``realdeal evaluate ARGS --out OUT`` with ``nproc`` processes; its wall times."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REALDEAL_NO_PROGRESS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *(launch if nproc > 1 else []), "-m", "realdeal", "evaluate", *args]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    t = json.loads((out / "results.json").read_text())["timings"]
    shared = t["features"] if "features" in t else t["wall"]
    alone = t["wall"] - t["features"] if "features" in t else t["tables"]
    return {"processes": nproc, "command_s": wall, "shared_s": shared, "rank0_tables_s": alone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 112, 96))
    ap.add_argument("--patches", type=int, default=200, help="2D patches per axis and image")
    ap.add_argument("--processes", type=int, nargs="+", default=(1, 2, 4))
    ap.add_argument("--networks", action="store_true", help="LPIPS and FID's Inception too")
    ap.add_argument("--weights-dir", help="their weights (default: random, same layouts)")
    ap.add_argument("--workdir", help="keep the cohort and outputs here (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluate_ranks"))
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="evaluate_ranks-"))
    sets = cohort(work / "cohort", args.subjects, tuple(args.shape))
    net = []
    if args.networks:
        weights = args.weights_dir or str(random_weights(work / "weights"))
        net = ["--weights-dir", weights, "--no-download"]
    size = "64" if net else "32"  # LPIPS's AlexNet needs 64² patches
    common = ["--patches", str(args.patches), "--patch-size", size, "--workers", "1"]
    modes = {
        "paired": ["paired", "--originals", str(sets["originals"]), "--labels",
                   str(sets["labels"]), "--candidate", f"blurred={sets['blurred']}",
                   "--candidate", f"renoised={sets['renoised']}", "--bootstrap", "200",
                   *(net or ["--no-lpips"])],
        "unpaired": ["unpaired", "--real", str(sets["originals"]), "--real-labels",
                     str(sets["labels"]), "--generated", f"blurred={sets['blurred']}",
                     "--generated", f"renoised={sets['renoised']}", "--bootstrap", "8",
                     "--features", "inception" if net else "patchstats", *net],
    }  # fmt: skip
    load = os.getloadavg()[0]
    rows = []
    for mode, margs in modes.items():
        outs = {}
        for n in args.processes:
            outs[n] = work / f"{mode}-{n}"
            row = {"mode": mode, **evaluate([*margs, *common], n, outs[n])}
            print(f"{mode}: {n} process(es): {row['command_s']:.1f} s", file=sys.stderr)
            rows.append(row)
        first = outs[args.processes[0]]
        same = all(
            (o / t).read_bytes() == (first / t).read_bytes() for o in outs.values() for t in TABLES
        )
        for r in rows[-len(args.processes) :]:
            r["tables_identical"] = same

    import torch

    date = datetime.date.today().isoformat()
    cpu = platform.processor() or platform.machine()
    where = (
        f"{date}, {os.cpu_count()}-core {cpu} CPU (load average {load:.1f} at the start), "
        f"torch {torch.__version__}, one thread per process"
    )
    lpips = (
        "LPIPS and FID's Inception ("
        + (f"weights of {args.weights_dir}" if args.weights_dir else "random weights")
        + ")"
        if net
        else "no networks: --no-lpips, patch statistics"
    )
    lines = [
        f"**`realdeal evaluate` over ranks** — {args.subjects} phantoms of "
        f"{'×'.join(map(str, args.shape))}, {args.patches} patches per axis, {lpips}; {where}",
        "",
        "| mode | processes | command wall (s) | shared by the ranks (s) | speed-up "
        "| rank 0 alone: tables (s) | tables identical |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r["mode"]: r["shared_s"] for r in rows if r["processes"] == args.processes[0]}
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['processes']} | {r['command_s']:.1f} | {r['shared_s']:.1f} "
            f"| {base[r['mode']] / r['shared_s']:.2f}× | {r['rank0_tables_s']:.1f} "
            f"| {'yes' if r['tables_identical'] else 'NO'} |"
        )
    argv = [a for a in sys.argv[1:] if a not in (args.workdir, "--workdir")]
    command = "python benchmarks/evaluate_ranks.py " + " ".join(argv)
    lines += ["", f"Command: `{command.strip()}`"]
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    result = {
        "date": date,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "torch": torch.__version__,
        "subjects": args.subjects,
        "shape": list(args.shape),
        "patches": args.patches,
        "networks": bool(net),
        "rows": rows,
        "command": command.strip(),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if not all(r["tables_identical"] for r in rows):
        sys.exit("the tables differ between process counts")


if __name__ == "__main__":
    main()
