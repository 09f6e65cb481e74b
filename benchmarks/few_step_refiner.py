"""Few-step refinement: a distilled student against its teacher and the 1,000-step reference.

Refines held-out subjects of a prepared dataset (``--data``: the demo's, with reconstructions of
its test split) from their reconstructions, side by side in one run, on the same threads:

* the reference: DDPM at ``--reference-steps`` (1,000) on the authors' traversal, on the first
  ``--reference-subjects`` subjects only (on a CPU it costs about 70,000 U-Net evaluations a
  96 × 112 × 96 subject; the table says on how many subjects it ran);
* the teacher (``--teacher``) with its default sampling at each ``--teacher-steps`` count, and
  at each ``--teacher-distilled-steps`` count with the students' sampler (``distilled``:
  deterministic DDIM on the quadratic halving grid, the chain distillation trains the students
  to reproduce in half the steps);
* the student at each ``--student-steps`` count: the checkpoint of a ``realdeal train
  refiner-student`` run (``--students RUN``: its ``rounds/round-K.pt`` files, one per step
  count, and its ``checkpoint.pt``) whose native steps are that count, with its own sampler.

Columns, means over subjects: U-Net evaluations, wall time, and the refinement benchmarks'
measures (``benchmarks/_quality.py``: sharpness, noise std, white-matter noise KL to the
original, seam score) plus the paired suite's whole-brain HOG distance to the original divided
by the reconstruction's (:mod:`realdeal.metrics.texture`; worst axis, as the demo's criterion;
lower is better, below 1 means closer in texture than the reconstruction). Where the reference
ran, each row's sharpness and noise std are also given as a fraction of the reference's on the
same subjects. ``--crop X Y Z`` refines and measures a centred crop of every subject instead
(every row alike). Writes ``--out`` (JSON) and the Markdown table beside it, and prints it::

    python benchmarks/few_step_refiner.py --data training-runs/demo/data \\
        --teacher src/realdeal/demo_checkpoints/refiner.pt \\
        --students training-runs/refiner-student/run --subjects 3 --reference-subjects 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _quality import NoiseReference, quality, save  # benchmarks/ is sys.path[0] as a script

ROOT = Path(__file__).resolve().parent.parent
WHITE_MATTER = (2, 41)


def student_checkpoints(run: Path) -> dict[int, Path]:
    """``{native steps: checkpoint}`` of a student run folder (its round files and its last
    checkpoint), or of one student checkpoint file."""
    from realdeal.runtime.checkpoint import load_checkpoint

    files = [run] if run.is_file() else [*sorted((run / "rounds").glob("round-*.pt"))]
    out: dict[int, Path] = {}
    for f in files:
        rec = load_checkpoint(f, kind="refiner").distilled
        if rec is None:
            raise SystemExit(f"few_step_refiner: {f} is not a distilled student")
        out.setdefault(rec.steps, f)
    return out


def subject_arrays(ds, sid: str, crop: tuple[int, int, int] | None) -> dict[str, np.ndarray]:
    """Coarse (reconstruction), original, brain mask and labels of one subject (cropped)."""
    labels = ds.load_label(sid)
    if labels is None:
        raise SystemExit(f"few_step_refiner: {sid} has no labels (the white-matter noise KL)")
    arrays = {
        "coarse": ds.load_derived("reconstructions", sid).data.astype(np.float32),
        "original": ds.load_image(sid).data.astype(np.float32),
        "brain": ds.load_mask(sid),
        "labels": labels.data,
    }
    if crop is not None:
        shape = arrays["coarse"].shape
        c = [(s - k) // 2 for s, k in zip(shape, crop, strict=True)]
        sl = tuple(slice(a, a + k) for a, k in zip(c, crop, strict=True))
        arrays = {k: v[sl] for k, v in arrays.items()}
    return arrays


class Subject:
    """One held-out subject's inputs and the references every row is measured against."""

    def __init__(self, sid: str, arrays: dict[str, np.ndarray]):
        from realdeal.metrics.texture import hog_descriptors, region_box

        self.sid, self.x, self.original = sid, arrays["coarse"], arrays["original"]
        self.noise = NoiseReference.of(self.original, np.isin(arrays["labels"], WHITE_MATTER))
        self.box = region_box(arrays["brain"])
        self.hog_original = hog_descriptors(self.original, self.box)
        self.hog_coarse = self._hog_distances(self.x)

    def _hog_distances(self, y: np.ndarray) -> list[float]:
        from realdeal.metrics.texture import hog_descriptors, hog_distance_from_descriptors

        d = hog_descriptors(y, self.box)
        return [hog_distance_from_descriptors(self.hog_original[a], d[a]) for a in range(3)]

    def measure(self, y: np.ndarray, plan) -> dict[str, float]:
        """The quality measures of a refined volume ``y`` cut by ``plan``."""
        ratios = [a / b for a, b in zip(self._hog_distances(y), self.hog_coarse, strict=True)]
        return {**quality(y, self.x, plan, self.noise), "hog_over_reconstruction": max(ratios)}


def refine_row(name: str, pipe, settings, subjects: list[Subject]) -> dict:
    """Refine every subject with ``pipe`` and ``settings``; per-subject and mean figures."""
    per = []
    for s in subjects:
        t0 = time.perf_counter()
        res = pipe.refine_array(s.x, settings)
        wall = time.perf_counter() - t0
        row = {"subject": s.sid, "wall_s": wall, "unet_evaluations": res.unet_evaluations}
        per.append(row | s.measure(res.refined, res.plan))
        print(f"  {name} {s.sid}: {wall:.1f} s", file=sys.stderr, flush=True)
    keys = [k for k in per[0] if k != "subject"]
    mean = {k: float(np.mean([r[k] for r in per])) for k in keys}
    sampling = pipe.sampling(settings)
    return {"row": name, "sampler": sampling._asdict(), "subjects": per, "mean": mean}


def run(args: argparse.Namespace) -> dict:
    import torch

    from realdeal.data.dataset import PreparedDataset
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    torch.set_num_threads(args.threads)
    ds = PreparedDataset(args.data)
    ids = ds.ids("test")[: args.subjects]
    subjects = [Subject(sid, subject_arrays(ds, sid, args.crop)) for sid in ids]
    teacher = RefinerPipeline.from_checkpoint(args.teacher)
    students = student_checkpoints(args.students) if args.students else {}
    base = RefineSettings(seed=args.seed, max_batch=args.max_batch, precision="fp32")
    rows = []
    if args.reference_subjects:
        ref = RefineSettings(sampler="ddpm", steps=args.reference_steps, traversal="official",
                             skip_background=False, seed=args.seed, max_batch=args.max_batch,
                             precision="fp32")  # fmt: skip
        rows.append(refine_row(f"reference: authors' traversal, DDPM {args.reference_steps}",
                               teacher, ref, subjects[: args.reference_subjects]))  # fmt: skip
    for n in args.teacher_steps:
        rows.append(refine_row(f"teacher, {n} steps", teacher, replace(base, steps=n), subjects))
    for n in args.teacher_distilled_steps:
        det = replace(base, sampler="distilled", steps=n, spacing="quadratic")
        rows.append(refine_row(f"teacher, {n} steps, distilled sampler", teacher, det, subjects))
    for n in args.student_steps:
        if n not in students:
            print(f"no student of {n} steps in {args.students}; skipped", file=sys.stderr)
            continue
        pipe = RefinerPipeline.from_checkpoint(students[n])
        rows.append(refine_row(f"student, {n} steps ({students[n].name})", pipe, base, subjects))
    _relative_to_reference(rows)
    return {
        "date": datetime.date.today().isoformat(),
        "hardware": f"{platform.machine()} {platform.processor() or 'CPU'}, "
        f"{args.threads} thread(s), torch {torch.__version__}",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "subjects": ids,
        "rows": rows,
    }


def _relative_to_reference(rows: list[dict]) -> None:
    """Each row's sharpness and noise std over the reference's, on the reference's subjects."""
    if not rows or not rows[0]["row"].startswith("reference"):
        return
    ref = {r["subject"]: r for r in rows[0]["subjects"]}
    for row in rows[1:]:
        shared = [r for r in row["subjects"] if r["subject"] in ref]
        row["over_reference"] = {
            k: float(np.mean([r[k] / ref[r["subject"]][k] for r in shared]))
            for k in ("sharpness", "noise_std")
        }


def markdown(result: dict) -> str:
    n = len(result["subjects"])
    lines = [
        f"Held-out subjects: {n} ({', '.join(result['subjects'])}); {result['hardware']}; "
        f"{result['date']}.",
        "",
        "| row | subjects | U-Net evals | wall (s) | sharpness | noise std | noise KL WM | "
        "HOG ÷ recon (worst axis) | seam |",
        "|---" * 9 + "|",
    ]
    for r in result["rows"]:
        m, rel = r["mean"], r.get("over_reference")

        def frac(k: str, rel: dict | None = rel) -> str:
            return f" ({rel[k]:.2f}× ref)" if rel else ""

        lines.append(
            f"| {r['row']} | {len(r['subjects'])} | {m['unet_evaluations']:,.0f} | "
            f"{m['wall_s']:.1f} | {m['sharpness']:.4f}{frac('sharpness')} | "
            f"{m['noise_std']:.4f}{frac('noise_std')} | {m['noise_kl_wm']:.3f} | "
            f"{m['hog_over_reconstruction']:.3f} | {m['seam_score']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (test split)")
    p.add_argument("--teacher", default=str(ROOT / "src/realdeal/demo_checkpoints/refiner.pt"))
    p.add_argument("--students", type=Path, help="student run folder or checkpoint")
    p.add_argument("--teacher-steps", type=int, nargs="*", default=[10, 20, 30])
    p.add_argument(
        "--teacher-distilled-steps",
        type=int,
        nargs="*",
        default=[],
        help="the teacher with the students' deterministic sampler at these counts",
    )
    p.add_argument("--student-steps", type=int, nargs="*", default=[1, 2, 4, 8])
    p.add_argument("--subjects", type=int, default=3, help="held-out subjects (default 3)")
    p.add_argument("--reference-subjects", type=int, default=1, help="of those, for the reference")
    p.add_argument("--reference-steps", type=int, default=1000)
    p.add_argument("--crop", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/few_step_refiner.json")
    args = p.parse_args(argv)
    result = run(args)
    return save(args.out, json.loads(json.dumps(result)), markdown(result))


if __name__ == "__main__":
    raise SystemExit(main())
