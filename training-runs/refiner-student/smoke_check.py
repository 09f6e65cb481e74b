"""Check a student run of the demo refiner: did distillation move the student toward its teacher?

For the run's last student (``RUN/checkpoint.pt``, native ``N`` steps) and the first teacher
(``--teacher``):

* the distillation loss on 24 fixed windows of the held-out subjects (built as training builds
  them, seeds not used in training), per step of the student's grid, for the initial student
  (the teacher's weights) and the trained one (EMA weights);
* a centred 64³ crop of the first held-out subject's reconstruction refined by the teacher with
  the distilled sampler at ``2N`` steps (what the student learns to reproduce), by the teacher
  at ``N`` (the initial student) and by the student at ``N``: RMSE to the teacher's ``2N`` in
  the brain (fp32, same seed, so the same start noise).

    python training-runs/refiner-student/smoke_check.py RUN --data training-runs/demo/data
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from realdeal.config import from_dict
from realdeal.data.dataset import PreparedDataset
from realdeal.data.fraction import brain_fraction_map
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.models.loading import load_refiner, unet_from_checkpoint
from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings
from realdeal.presets import StudentRunConfig
from realdeal.runtime.checkpoint import load_checkpoint
from realdeal.runtime.rng import batch_draws, sample_seed
from realdeal.training.distill import DistillTask
from realdeal.training.refiner import PatchPairs


def loss_per_step(run: str, data: str, teacher: str) -> dict[str, list[float]]:
    """The distillation loss of the initial and the trained student at each grid step."""
    ckpt = load_checkpoint(f"{run}/checkpoint.pt", kind="refiner")
    cfg = from_dict(StudentRunConfig, ckpt.config)
    ds = PreparedDataset(data)
    test = ds.ids("test")
    pairs = PatchPairs(
        [ds.load_image(s).data for s in test],
        [ds.load_derived("reconstructions", s).data for s in test],
        [brain_fraction_map(ds.load_mask(s), cfg.window) for s in test],
        cfg.window, cfg.masks, cfg.positions,
    )  # fmt: skip
    items = [pairs[(k % len(test), sample_seed(123, k))] for k in range(24)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    task = DistillTask(NoiseSchedule(cfg.schedule), load_refiner(teacher).unet, ckpt.distilled.steps,
                       cfg.distill.spacing, cfg.distill.weighting, cfg.target,
                       cfg.residual_scale)  # fmt: skip
    draws = batch_draws(task, batch)
    nets = {"initial": load_refiner(teacher).unet, "trained": unet_from_checkpoint(ckpt, run)}
    out: dict[str, list[float]] = {name: [] for name in nets}
    with torch.no_grad():
        for i in range(ckpt.distilled.steps):
            b = {**batch, "g": draws["g"], "eps": draws["eps"], "i": torch.full((24,), i)}
            for name, net in nets.items():
                parts = [
                    task.loss(net, {k: v[j : j + 8] for k, v in b.items()}) for j in (0, 8, 16)
                ]
                out[name].append(float(np.mean([float(p) for p in parts])))
    return out


def rollouts(run: str, data: str, teacher: str) -> dict[str, float]:
    """RMSE (brain, image units) of the teacher at N and the student at N to the teacher at 2N."""
    ds = PreparedDataset(data)
    x = ds.load_derived("reconstructions", ds.ids("test")[0]).data
    sl = tuple(slice((s - 64) // 2, (s - 64) // 2 + 64) for s in x.shape)
    x = x[sl]
    brain = x > -0.95
    tp, sp = (
        RefinerPipeline.from_checkpoint(teacher),
        RefinerPipeline.from_checkpoint(f"{run}/checkpoint.pt"),
    )
    n, spacing = sp.distillation.steps, sp.distillation.spacing
    fp32 = RefineSettings(precision="fp32")
    runs = {
        "teacher 2N": (tp, replace(fp32, sampler="distilled", steps=2 * n, spacing=spacing)),
        "teacher N": (tp, replace(fp32, sampler="distilled", steps=n, spacing=spacing)),
        "student N": (sp, fp32),
    }
    out = {name: pipe.refine_array(x, s).refined for name, (pipe, s) in runs.items()}
    ref = out["teacher 2N"][brain]
    return {f"rmse to teacher 2N: {k}": float(np.sqrt(((v[brain] - ref) ** 2).mean()))
            for k, v in out.items() if k != "teacher 2N"}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--teacher", default="demo:refiner")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"loss_per_step": loss_per_step(args.run, args.data, args.teacher)}
    result |= rollouts(args.run, args.data, args.teacher)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
