"""Refinement benchmark: the official schedule against ours, on the same coarse input.

(a) official: the authors' traversal (docs/method.md#spec-5-4) (centre → y column → z → x slabs, half-window overlap, no
    background skipping) with DDPM at ``--ref-steps`` (the paper uses 1,000; evaluations scale
    linearly with steps, so the 1,000-step cost is extrapolated from the measured one);
(b) ours: centre-out wavefront plan (quarter-window overlap), background skipping,
    a fast sampler: ``--sampler`` (default DDIM with ``--eta`` 1, the demo's choice: on the
    demo refiner DPM-Solver++ overshot the white-matter noise) with ``--steps`` steps (one run
    per value given).

Both run in this process on the same input (optionally a centred crop, ``--crop``, so the
reference finishes on a CPU). Reported: U-Net evaluations, sequential network calls, wall
time, peak memory (each run in a fresh subprocess, peak RSS), waves, redundancy, and the
quality of (b) against (a): sharpness (variance of the Laplacian after σ = 0.5 smoothing, in
brain), noise level (std of image − 3×3×3 median in brain), seam score; with ``--original``
the same for the uncompressed volume (what both should approach). Also
prints the plan-only counts for the full HCP geometry. A memory section refines synthetic
volumes of 64³ and 128³ with ``--max-batch`` fixed to show that peak memory does not grow
with the volume beyond the volume arrays.

    python benchmarks/refine.py --checkpoint src/realdeal/demo_checkpoints/refiner.pt \\
        --input run/data/reconstructions/sub-002.nii.gz \\
        --original run/data/images/sub-002.nii.gz --ref-steps 50 --steps 10 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _quality import quality  # benchmarks/ is sys.path[0] when run as a script


def _run_one(args: argparse.Namespace) -> None:
    """Child process: one refinement, prints a JSON line with results and peak RSS."""
    import torch

    from realdeal.data.io import load_volume
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    torch.set_num_threads(args.threads)
    if args.synthetic:
        n = args.synthetic
        idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
        d = np.sqrt((((idx - n / 2) / (n * 0.4)) ** 2).sum(-1))
        rng = np.random.default_rng(0)
        x = np.where(d < 1, 0.3 + 0.05 * rng.standard_normal(d.shape), -1).astype(np.float32)
    else:
        x = load_volume(args.input).data
        if args.crop:
            c = [(s - k) // 2 for s, k in zip(x.shape, args.crop, strict=True)]
            x = x[tuple(slice(a, a + k) for a, k in zip(c, args.crop, strict=True))]
    pipe = RefinerPipeline.from_checkpoint(args.checkpoint)
    settings = RefineSettings(
        sampler=args.sampler, steps=args.run_steps, eta=args.eta, traversal=args.traversal,
        skip_background=args.traversal == "wavefront", max_batch=args.max_batch, seed=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = pipe.refine_array(x, settings)
    wall = time.perf_counter() - t0
    np.save(args.save, res.refined)
    np.save(args.save.replace(".npy", "_input.npy"), x)
    print(json.dumps({
        "schedule": args.traversal, "sampler": args.sampler, "steps": args.run_steps,
        "shape": list(x.shape), "wall_s": wall, "unet_evaluations": res.unet_evaluations,
        "network_calls": res.network_calls, "waves": res.plan.stats.waves,
        "windows": res.plan.stats.windows_run, "skipped": res.plan.stats.windows_skipped,
        "redundancy": res.plan.stats.redundancy,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }))  # fmt: skip


def _child(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *argv], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input")
    p.add_argument("--crop", type=int, nargs=3)
    p.add_argument("--ref-steps", type=int, default=50)
    p.add_argument(
        "--steps", type=int, nargs="+", default=[10], help="steps of ours; one run per value"
    )
    p.add_argument("--sampler", default="ddim", help="sampler of ours: ddim (default) or dpm++")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta of ours (default 1)")
    p.add_argument("--original", help="the uncompressed volume, for reference quality figures")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/refine.json")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument(
        "--previous",
        help="an earlier refine.json: reuse its runs of ours and its memory section (their "
        "outputs, counts and quality are deterministic; wall times stay as measured then) and "
        "run only the reference",
    )
    # child-only arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--traversal", default="wavefront", help=argparse.SUPPRESS)
    p.add_argument("--run-steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--synthetic", type=int, help=argparse.SUPPRESS)
    p.add_argument("--save", default="/tmp/realdeal_bench.npy", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _run_one(args)
        return

    from realdeal.inference.plan import PlanConfig, make_plan, official_plan

    common = [
        "--checkpoint",
        args.checkpoint,
        "--max-batch",
        str(args.max_batch),
        "--threads",
        str(args.threads),
    ]
    results: dict = {"settings": vars(args)}
    previous = json.loads(Path(args.previous).read_text()) if args.previous else None
    rows = []
    if not args.memory_only:
        src = ["--input", args.input] + (["--crop", *map(str, args.crop)] if args.crop else [])
        a = _child(
            [
                *common,
                *src,
                "--traversal",
                "official",
                "--sampler",
                "ddpm",
                "--run-steps",
                str(args.ref_steps),
                "--save",
                "/tmp/rd_a.npy",
            ]
        )
        ours_runs = []
        if previous is not None:
            ours_runs = [dict(r, reused_from=args.previous) for r in previous["ours"]]
            log_reuse = [r["steps"] for r in ours_runs]
            print(f"reusing ours at {log_reuse} steps from {args.previous}", file=sys.stderr)
        for steps in args.steps if previous is None else []:
            r = _child(
                [
                    *common,
                    *src,
                    "--traversal",
                    "wavefront",
                    "--sampler",
                    args.sampler,
                    "--eta",
                    str(args.eta),
                    "--run-steps",
                    str(steps),
                    "--save",
                    f"/tmp/rd_b{steps}.npy",
                ]
            )
            r["output"] = f"/tmp/rd_b{steps}.npy"
            ours_runs.append(r)
        ya, x = np.load("/tmp/rd_a.npy"), np.load("/tmp/rd_a_input.npy")
        from realdeal.pipelines.refiner import RefinerPipeline

        pipe = RefinerPipeline.from_checkpoint(args.checkpoint)
        plan_a = official_plan(x.shape, window=pipe.window)
        plan_b = make_plan(x.shape, PlanConfig(window=pipe.window), coarse=x)
        a["quality"] = qa = quality(ya, x, plan_a)
        results["input_quality"] = quality(x, x, plan_b)
        if args.original:
            from realdeal.data.io import load_volume

            o = load_volume(args.original).data
            if args.crop:
                c = [(s - k) // 2 for s, k in zip(o.shape, args.crop, strict=True)]
                o = o[tuple(slice(i, i + k) for i, k in zip(c, args.crop, strict=True))]
            results["original_quality"] = quality(o, x, plan_b)
        a["unet_evaluations_at_1000"] = a["unet_evaluations"] * 1000 // args.ref_steps
        a["wall_s_at_1000_extrapolated"] = a["wall_s"] * 1000 / args.ref_steps
        results["official"], results["ours"] = a, ours_runs
        for b in ours_runs:
            if "output" in b:
                b["quality"] = quality(np.load(b.pop("output")), x, plan_b)
            qb = b["quality"]
            b["ratios"] = {
                "evaluations_measured": a["unet_evaluations"] / b["unet_evaluations"],
                "evaluations_vs_1000_step_reference": a["unet_evaluations_at_1000"]
                / b["unet_evaluations"],
                "wall_measured": a["wall_s"] / b["wall_s"],
                "wall_vs_1000_step_reference_extrapolated": a["wall_s_at_1000_extrapolated"]
                / b["wall_s"],
                **{f"{k}_ours_over_official": qb[k] / qa[k] for k in qa},
            }
        ours = f"(b) ours + {args.sampler}" + (f" η={args.eta:g}" if args.sampler == "ddim" else "")
        for name, r in (("(a) official + DDPM", a), *((ours, b) for b in ours_runs)):
            q = r["quality"]
            rows.append(
                f"| {name} | {r['steps']} | {r['windows']} ({r['skipped']} skipped) | {r['waves']} | "
                f"{r['redundancy']:.2f} | {r['unet_evaluations']:,} | {r['network_calls']:,} | {r['wall_s']:.1f} | "
                f"{r['peak_rss_gb']:.2f} | {q['sharpness']:.4g} | {q['noise_std']:.4g} | {q['seam_score']:.3f} |"
            )
        for name, key in (("coarse input", "input_quality"), ("original", "original_quality")):
            if key in results:
                q = results[key]
                rows.append(
                    f"| {name} | | | | | | | | | {q['sharpness']:.4g} | {q['noise_std']:.4g} | {q['seam_score']:.3f} |"
                )
    mem = [] if previous is None else previous["memory"]
    for n in (64, 128) if previous is None else ():
        m = _child(
            [*common, "--synthetic", str(n), "--run-steps", "1", "--save", f"/tmp/rd_m{n}.npy"]
        )
        mem.append(m)
    results["memory"] = mem
    hcp = {}
    shape = (224, 288, 224)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    brain = np.sqrt((((idx - np.array(shape) / 2) / (np.array(shape) * 0.42)) ** 2).sum(-1)) < 1
    for name, plan in (
        ("official", official_plan(shape, window=64)),
        ("ours", make_plan(shape, PlanConfig(window=64), brain_mask=brain)),
    ):
        s = plan.stats
        hcp[name] = {"windows": s.windows_run, "waves": s.waves, "redundancy": s.redundancy}
    hcp["official"]["evaluations_at_1000"] = hcp["official"]["windows"] * 1000
    for steps in args.steps:
        hcp["ours"][f"evaluations_at_{steps}"] = hcp["ours"]["windows"] * steps
    results["hcp_plan_only"] = hcp
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    print(
        "| run | steps | windows | waves | redundancy | U-Net evals | sequential calls | wall (s) | peak RSS (GB) | sharpness | noise std | seam |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for b in results.get("ours", []):
        r = b["ratios"]
        print(
            f"\nours at {b['steps']} steps: evaluations {r['evaluations_measured']:.1f}× fewer "
            f"measured, {r['evaluations_vs_1000_step_reference']:.0f}× fewer vs the 1,000-step "
            f"reference; wall time {r['wall_measured']:.1f}× measured, "
            f"{r['wall_vs_1000_step_reference_extrapolated']:.0f}× vs 1,000 steps (extrapolated)"
        )
        print(
            "quality ours / official: "
            + ", ".join(f"{k.split('_ours')[0]} {v:.3f}" for k, v in r.items() if "over" in k)
        )
    print("\n| memory | volume | windows | peak RSS (GB) |\n|---|---|---|---|")
    for m in mem:
        print(
            f"| synthetic | {'×'.join(map(str, m['shape']))} | {m['windows']} | {m['peak_rss_gb']:.2f} |"
        )
    official = hcp["official"]["evaluations_at_1000"]
    print(
        f"\nHCP 224×288×224, 64³ windows (plan only): official {hcp['official']['windows']} "
        f"windows, {hcp['official']['waves']} waves, {official:,} evaluations at 1,000 DDPM steps; "
        f"ours {hcp['ours']['windows']} windows, {hcp['ours']['waves']} waves, "
        + ", ".join(
            f"{hcp['ours'][f'evaluations_at_{st}']:,} at {st} {args.sampler} steps "
            f"({official / hcp['ours'][f'evaluations_at_{st}']:.0f}× fewer)"
            for st in args.steps
        )
    )


if __name__ == "__main__":
    main()
