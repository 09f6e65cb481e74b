"""Training throughput and peak memory of the autoencoder and the LDM, and engine overhead.

For each model in the ``cpu-small`` preset this times (a) our engine's training step
(:func:`realdeal.training.engine.train`: AdamW, EMA, clipping, per-sample seeded noise,
metrics log, data loader) and (b) a plain MONAI-tutorial training loop of the same model,
same batch, same optimizer and precision, in the same process, interleaved, and reports
samples/s and the ratio ours/plain (target ≥ 0.95 on CPU). For the ``paper`` preset it runs
one forward/backward batch (on CPU, the autoencoder on a crop, since a whole 224×288×224
volume at 64 channels needs far more memory than a CPU machine has). Peak memory is the
process's maximum resident set size (CPU) or ``torch.cuda.max_memory_allocated`` (GPU);
each measurement runs in its own subprocess so peaks do not mix.

    PYTHONPATH=src python benchmarks/train.py                 # cpu-small, both models
    PYTHONPATH=src python benchmarks/train.py --paper         # + paper one-batch numbers
    PYTHONPATH=src python benchmarks/train.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(model_kind: str, preset_name: str, crop: int | None):
    """(model, task, dataset, run config) with synthetic data of the preset's sizes."""
    from realdeal.diffusion.schedule import NoiseSchedule
    from realdeal.models.autoencoder import Autoencoder
    from realdeal.models.unet import build_unet
    from realdeal.presets import preset
    from realdeal.training.autoencoder import AutoencoderTask
    from realdeal.training.ldm import LatentDiffusionTask, LatentItems

    cfg = preset(model_kind, preset_name)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if model_kind == "autoencoder":
        shape = (
            (crop,) * 3
            if crop
            else (cfg.crop or ((96, 112, 96) if preset_name == "cpu-small" else (224, 288, 224)))
        )
        data = LatentItems(
            torch.rand(8, 1, *shape, generator=g) * 2 - 1
        )  # (index, seed) → {"z": ...}
        data_key = "z"
        model = Autoencoder(cfg.model)
        task = AutoencoderTask(cfg.loss)
        task_loss = task.loss
        task.loss = lambda m, b: task_loss(
            m, {"x": b["z"], "seed": b["seed"]}
        )  # same data class for both
        return model, task, data, cfg, data_key
    shape = (24, 28, 24) if preset_name == "cpu-small" else (56, 72, 56)
    data = LatentItems(torch.rand(8, 4, *shape, generator=g) * 2 - 1)
    return build_unet(cfg.unet), LatentDiffusionTask(NoiseSchedule(cfg.schedule)), data, cfg, "z"


def _plain_step_fn(model_kind, model, cfg, device, amp):
    """One step of a plain MONAI-tutorial loop: zero_grad, forward, loss, backward, step."""
    from monai.networks.schedulers import DDPMScheduler
    from torch.nn import functional as F

    from realdeal.runtime.device import autocast_context

    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    if model_kind == "ldm":
        sch = DDPMScheduler(
            1000,
            schedule=cfg.schedule.schedule,
            beta_start=cfg.schedule.beta_start,
            beta_end=cfg.schedule.beta_end,
            prediction_type=cfg.schedule.prediction_type,
        )

    def step(x):
        opt.zero_grad(set_to_none=True)
        with autocast_context(amp, device):
            if model_kind == "ldm":
                noise = torch.randn_like(x)
                t = torch.randint(0, 1000, (x.shape[0],), device=device)
                pred = model(sch.add_noise(x, noise, t), t)
                loss = F.mse_loss(pred.float(), sch.get_velocity(x, noise, t).float())
            else:
                loss = F.mse_loss(model(x).float(), x.float())
        loss.backward()
        opt.step()
        return loss

    return step


def measure(
    model_kind: str,
    preset_name: str,
    mode: str,
    steps: int,
    crop: int | None = None,
    batch: int | None = None,
) -> dict:
    """Run in a fresh process: ``mode`` is ``ours`` (engine) or ``plain`` or ``onebatch``."""
    import dataclasses

    from realdeal.runtime.device import resolve_precision
    from realdeal.runtime.distributed import DistInfo, resolve_device
    from realdeal.training.engine import TrainConfig, train

    device = resolve_device("auto")
    model, task, data, cfg, key = _setup(model_kind, preset_name, crop)
    tcfg: TrainConfig = dataclasses.replace(
        cfg.train,
        steps=steps,
        log_every=10**9,
        checkpoint_every=10**9,
        batch_size=batch or cfg.train.batch_size,
        warmup_steps=0,
    )
    amp, _ = resolve_precision(tcfg.precision, device)
    n_params = sum(p.numel() for p in model.parameters())
    if mode == "ours":
        marks: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            train(
                task,
                model,
                data,
                tcfg,
                tmp,
                run_config={},
                model_config={},
                dist=DistInfo(device=device),
                on_step=lambda s, loss: marks.append(time.perf_counter()),
            )
        times = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]
    else:
        model.to(device)
        if tcfg.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        step = _plain_step_fn(model_kind, model, cfg, device, amp)
        xs = torch.stack([data[(i % len(data), 0)][key] for i in range(tcfg.batch_size)]).to(device)
        if tcfg.channels_last:
            xs = xs.contiguous(memory_format=torch.channels_last_3d)
        times = []
        for _ in range(steps if mode == "plain" else 1):
            t0 = time.perf_counter()
            float(step(xs))
            times.append(time.perf_counter() - t0)
        if mode == "plain":
            times = times[1:]  # drop the warm-up step, as the engine's timing does
    if device.type == "cuda":
        torch.cuda.synchronize()
    # first step(s) include warm-up; the engine's list already starts after step 1
    per_step = sorted(times)[len(times) // 2]
    return {
        "model": model_kind,
        "preset": preset_name,
        "mode": mode,
        "device": str(device),
        "precision": str(amp).replace("torch.", "") if amp else "fp32",
        "batch": tcfg.batch_size,
        "input": list(data[(0, 0)][key].shape),
        "params_M": round(n_params / 1e6, 3),
        "median_step_s": round(per_step, 4),
        "samples_per_s": round(tcfg.batch_size / per_step, 3),
        "peak_mem_MB": round(_peak_mb(device), 1),
        "timed_steps": len(times),
    }


def _sub(args: list[str]) -> dict:
    env = {**os.environ, "REALDEAL_NO_PROGRESS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1]
            if out.stderr.strip()
            else f"exit {out.returncode}",
            "args": args,
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per cpu-small measurement")
    ap.add_argument(
        "--rounds", type=int, default=2, help="interleaved ours/plain rounds (median taken)"
    )
    ap.add_argument("--paper", action="store_true", help="also run one paper-size batch per model")
    ap.add_argument(
        "--paper-ae-crop", type=int, default=96, help="autoencoder crop for the paper batch on CPU"
    )
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        kind, preset_name, mode, steps, crop, batch = a.child
        print(
            json.dumps(
                measure(kind, preset_name, mode, int(steps), int(crop) or None, int(batch) or None)
            )
        )
        return 0
    results = []
    for kind in ("autoencoder", "ldm"):
        runs: dict[str, list[dict]] = {"ours": [], "plain": []}
        for _ in range(a.rounds):
            for mode in ("plain", "ours"):
                r = _sub([kind, "cpu-small", mode, str(a.steps), "0", "0"])
                runs[mode].append(r)
                results.append(r)
                print(json.dumps(r), flush=True)
        ok = all("error" not in r for m in runs.values() for r in m)
        if ok:
            # paired, interleaved rounds: the machine's load drifts, so compare within a round
            ratios = sorted(
                o["samples_per_s"] / p["samples_per_s"]
                for o, p in zip(runs["ours"], runs["plain"], strict=True)
            )
            med = {
                m: sorted(r["samples_per_s"] for r in rs)[len(rs) // 2] for m, rs in runs.items()
            }
            summary = {
                "model": kind,
                "preset": "cpu-small",
                "ours_samples_per_s": med["ours"],
                "plain_samples_per_s": med["plain"],
                "ratio_ours_over_plain_per_round": [round(r, 3) for r in ratios],
                "ratio_ours_over_plain_median": round(ratios[len(ratios) // 2], 3),
            }
            results.append(summary)
            print(json.dumps(summary), flush=True)
    if a.paper:
        for kind in ("autoencoder", "ldm"):
            crop = (
                a.paper_ae_crop if (kind == "autoencoder" and not torch.cuda.is_available()) else 0
            )
            r = _sub([kind, "paper", "onebatch", "2", str(crop), "1"])
            results.append(r)
            print(json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
