"""Several volumes on one device: refined one by one against refined together.

Refines ``--volumes`` small synthetic coarse volumes (different shapes and positions) with a
refiner checkpoint (default: the shipped ``cpu-small`` one, 32³ windows) both ways in this
process, alternating, ``--repeats`` times: (a) :func:`refine_volume` per volume, (b) one
:func:`refine_volumes` call (the next batch of every volume shares a network call, up to
``--max-batch`` windows). Reports network calls, U-Net evaluations, median wall time, and the
largest difference between the two results (float rounding of batched kernels only).

    python benchmarks/refine_many.py --shape 32 40 32 --steps 5 --max-batch 8 --repeats 2 \
        --out benchmarks/results/refine_many.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib.resources import files

import numpy as np
import torch


def coarse(shape: tuple[int, int, int], shift: float) -> np.ndarray:
    """A smooth ellipsoidal 'brain' in [−1, 1] with background −1."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    c = np.array(shape) / 2 + shift
    d = np.sqrt((((idx - c) / (np.array(shape) * 0.38)) ** 2).sum(-1))
    return np.where(d < 1, 0.5 - 0.6 * d + 0.1 * np.sin(idx[..., 0] / 2.0), -1.0).astype(np.float32)


def main() -> None:
    from realdeal.inference.refine import RefineJob, refine_volume, refine_volumes
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", default=str(files("realdeal") / "demo_checkpoints" / "refiner.pt")
    )
    ap.add_argument("--volumes", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 56, 48))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    pipe = RefinerPipeline.from_checkpoint(args.checkpoint)
    settings = RefineSettings(steps=args.steps, max_batch=args.max_batch)
    loop = pipe._loop(settings, show_progress=False)
    base = np.array(args.shape)
    jobs = []
    for i in range(args.volumes):
        x = coarse(tuple(int(v) for v in base + 4 * (i - 1)), shift=i - 1)
        jobs.append(RefineJob(x, pipe.plan(x, settings), seed=i))
    calls = {"alone": 0, "together": 0}
    unet = pipe.unet

    def counting(name):
        def hook(*_):
            calls[name] += 1

        return hook

    times: dict[str, list[float]] = {"alone": [], "together": []}
    results: dict[str, list[np.ndarray]] = {}
    for _ in range(args.repeats):
        for name in ("alone", "together"):
            calls[name] = 0
            h = unet.register_forward_hook(counting(name))
            t0 = time.perf_counter()
            with torch.no_grad():
                if name == "alone":
                    out = [refine_volume(j.coarse, plan=j.plan, seed=j.seed, **loop) for j in jobs]
                else:
                    got = dict(
                        (j.seed, r)
                        for j, r in refine_volumes(jobs, max_batch=args.max_batch, **loop)
                    )
                    out = [got[j.seed] for j in jobs]
            times[name].append(time.perf_counter() - t0)
            h.remove()
            print(f"{name}: {times[name][-1]:.1f} s, {calls[name]} network calls", flush=True)
            results[name] = [r.refined for r in out]
    evals = sum(j.plan.stats.windows_run for j in jobs) * args.steps
    diff = max(float(np.abs(a - b).max()) for a, b in zip(*results.values(), strict=True))
    report = {
        "volumes": [list(j.coarse.shape) for j in jobs],
        "windows": [j.plan.stats.windows_run for j in jobs],
        "steps": args.steps,
        "max_batch": args.max_batch,
        "threads": torch.get_num_threads(),
        "unet_evaluations": evals,
        "network_calls": dict(calls),
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "seconds_all": times,
        "max_abs_difference": diff,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
