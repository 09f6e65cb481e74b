"""GPU benchmark that fits one device call (≤ 8 min on one H100, wheel install included).

(a) The paper refiner (random weights, ``preset("refiner", "paper")``) on a full
    224×288×224 volume (a synthetic brain-shaped coarse input): first a few windows per
    numerical variant (fp32 / bf16 autocast, ``channels_last_3d``, ``torch.compile``) to find
    the fastest; then, with the fastest variant that needs no compilation, our wavefront plan
    end to end with DPM-Solver++ at 10 and 20 steps (``--student-steps``: also with a
    distilled student's sampler at those steps), and the authors' traversal (139 windows,
    20 steps) timed over all its windows at a few DDPM steps and extrapolated to 1,000 steps
    (labelled ``extrapolated``). Each: windows/s, U-Net evaluations/s, peak GPU memory. The
    ``torch.compile`` variants are timed last, after (b) and (c): compiling is slow and the
    least needed.
(b) The paper autoencoder and LDM (random weights): time and peak memory of one training
    step (forward, backward, AdamW) at batch 1 and 2 under bf16 autocast, and the time of
    one LDM sample with DDIM 50 (decoding included).
(c) Quality reference with the shipped demo refiner on a held-out demo reconstruction
    (``--quality-input``, an ``.npz`` with ``coarse``, ``original`` and ``labels``, written by
    ``benchmarks/gpu_wheels.sh``): the authors' traversal with the full 1,000 DDPM steps
    against ours (DDIM η = 1) at 10, 20 and 50 steps, on sharpness, noise std, noise KL in
    white matter and seam score (``benchmarks/_quality.py``).

A time budget (``--budget-s``, counted from the start of this script) guards every item:
an item whose estimated cost would overrun it is skipped and the reason recorded. Writes one
JSON (``--out``; default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``gpu_check.json``) and prints Markdown tables. ``--tiny`` runs the same code paths on the CPU
with small shapes, few steps and tiny networks (used by the tests).

    bash benchmarks/gpu_check.sh              # on the GPU machine, wheels from .device-wheels
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import DEFAULT_SAMPLING, make_sampler
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.inference.plan import PlanConfig, make_plan, official_plan
from realdeal.inference.refine import refine_volume
from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig, latent_shape
from realdeal.models.unet import UNetConfig, build_unet
from realdeal.pipelines.refiner import RefineSettings
from realdeal.presets import RefinerRunConfig, preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quality import NoiseReference, quality

log = logging.getLogger("gpu_check")
ROOT = Path(__file__).resolve().parent.parent
DEMO_REFINER = ROOT / "src/realdeal/demo_checkpoints/refiner.pt"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and ``--tiny``."""

    volume: tuple[int, int, int]
    refiner: RefinerRunConfig
    variant_windows: int
    variant_iters: int
    e2e_steps: tuple[int, ...]
    authors_probe_steps: int
    max_batch: int
    ae: AutoencoderConfig
    ae_image: tuple[int, int, int]
    ldm: UNetConfig
    ldm_sample_steps: int
    train_batches: tuple[int, ...]
    ref_steps: int
    ours_steps: tuple[int, ...]
    quality_crop: tuple[int, int, int] | None
    compile_backend: str
    variants: tuple[tuple[str, bool, bool], ...]
    """(precision, channels_last_3d, torch.compile) of each variant timed in (a)."""
    train_precision: str
    e2e_compile: bool = False
    """(a) also runs ours end to end with the network compiled as ``refine --compile`` does
    (:func:`~realdeal.runtime.device.compiled_network`: every call padded to ``max_batch``)."""
    ours_sampling: str = "both"
    """(c) ours with the residual refiner's default sampling, the linear one (linear spacing,
    fixed variance), or both."""
    refiner_checkpoint: Path = DEMO_REFINER
    """(c) the refiner: the shipped demo one, or a training run's checkpoint."""
    student_steps: tuple[int, ...] = ()
    """(a) also ours end to end with a distilled student's sampler at these step counts
    (timing only: the random-weight network costs what a student of it costs per evaluation)."""


def gpu_sizes() -> Sizes:
    return Sizes(
        volume=(224, 288, 224),
        refiner=preset("refiner", "paper"),
        variant_windows=4,
        variant_iters=3,
        e2e_steps=(10, 20),
        authors_probe_steps=2,
        # ours at the pipeline's default (RefineSettings.max_batch); the authors' traversal keeps
        # its own batching (up to 20 windows a step). Ours at 20 peaked at 30.9 GB on an H100
        # (benchmarks/results/gpu_check.md).
        max_batch=RefineSettings().max_batch,
        ae=preset("autoencoder", "paper").model,
        ae_image=(224, 288, 224),
        ldm=preset("ldm", "paper").unet,
        ldm_sample_steps=50,
        train_batches=(1, 2),
        ref_steps=1000,
        ours_steps=(10, 20, 50),
        quality_crop=None,
        compile_backend="inductor",
        variants=VARIANTS,
        train_precision="bf16",
    )


def tiny_sizes() -> Sizes:
    unet = UNetConfig(
        in_channels=3, out_channels=1, channels=(4, 4), num_res_blocks=1,
        attention_levels=(False, True), num_head_channels=(0, 4), norm_num_groups=2,
    )  # fmt: skip
    return Sizes(
        volume=(16, 16, 16),
        refiner=dataclasses.replace(preset("refiner", "paper"), window=8, unet=unet),
        variant_windows=2,
        variant_iters=1,
        e2e_steps=(1, 2),
        authors_probe_steps=1,
        max_batch=8,
        ae=AutoencoderConfig(channels=(2, 4, 4), bottleneck=2),
        ae_image=(8, 8, 8),
        ldm=dataclasses.replace(unet, in_channels=4, out_channels=4),
        ldm_sample_steps=2,
        train_batches=(1, 2),
        ref_steps=2,
        ours_steps=(1,),
        quality_crop=(32, 48, 32),
        compile_backend="eager",
        # one variant of each kind keeps every code path and the test short
        variants=(("fp32", False, False), ("bf16", True, False), ("fp32", True, True)),
        train_precision="fp32",  # bf16 autocast backward is slow on many CPUs
    )


class Budget:
    """Wall-clock budget from the start of the script; records what it skips and why."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), float(seconds)
        self.skipped: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def allows(self, item: str, estimate_s: float) -> bool:
        """True if ``estimate_s`` fits in what is left (with a 10 % margin), else record a skip."""
        if estimate_s * 1.1 <= self.left():
            return True
        reason = f"estimated {estimate_s:.0f} s, {max(self.left(), 0):.0f} s of the budget left"
        log.warning("skip %s: %s", item, reason)
        self.skipped.append({"item": item, "reason": reason, "estimate_s": estimate_s})
        return False


class Meter:
    """Wall time (synchronised on CUDA) and peak memory of one measured block."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Meter:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t
        self.peak_gb = peak_memory_gb(self.device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset; on CPU the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def synthetic_coarse(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A brain-shaped coarse volume in [−1, 1]: an ellipsoid of smooth texture, background −1."""
    idx = np.indices(shape, dtype=np.float32)
    c = (np.array(shape, np.float32) - 1) / 2
    d = sum(((idx[i] - c[i]) / (0.42 * shape[i])) ** 2 for i in range(3))
    rng = np.random.default_rng(seed)
    tex = 0.3 + 0.1 * np.sin(idx[0] / 5) * np.cos(idx[1] / 7) + 0.02 * rng.standard_normal(shape)
    return np.where(d < 1, tex, -1.0).astype(np.float32)


# -- (a) the paper refiner ---------------------------------------------------------------------
VARIANTS = (
    ("fp32", False, False),
    ("fp32", True, False),
    ("bf16", False, False),
    ("bf16", True, False),
    ("bf16", False, True),
    ("bf16", True, True),
)


def variant_name(precision: str, channels_last: bool, compiled: bool) -> str:
    """``bf16``, ``fp32+cl``, ``bf16+compile``, ``bf16+cl+compile``: the ``--variants`` names."""
    return precision + ("+cl" if channels_last else "") + ("+compile" if compiled else "")


def _prepare(net: torch.nn.Module, channels_last: bool, compiled: bool, backend: str):
    m = copy.deepcopy(net)
    if channels_last:
        m = m.to(memory_format=torch.channels_last_3d)
    return torch.compile(m, backend=backend) if compiled else m


def time_variants(
    net: torch.nn.Module,
    sizes: Sizes,
    device: torch.device,
    budget: Budget,
    compiled_ones: bool,
    per_window: float | None = None,
) -> list[dict[str, Any]]:
    """Forward time of ``variant_windows`` windows per variant (after one warm-up call), for
    the variants with (``compiled_ones``) or without ``torch.compile``."""
    w, n = sizes.refiner.window, sizes.variant_windows
    x = torch.randn(n, 3, w, w, w, device=device)
    t = torch.full((n,), 500, device=device, dtype=torch.long)
    rows: list[dict[str, Any]] = []
    for precision, cl, compiled in sizes.variants:
        if compiled != compiled_ones:
            continue
        name = f"{precision}{' + channels_last_3d' if cl else ''}{' + compile' if compiled else ''}"
        # a compiled variant pays its compilation once: guess 120 s
        estimate = (per_window or 1.0) * n * (sizes.variant_iters + 1) + (120 if compiled else 0)
        if not budget.allows(f"(a) variant {name}", estimate if per_window else 0.0):
            continue
        row: dict[str, Any] = {"variant": name, "precision": precision, "channels_last_3d": cl,
                               "compile": compiled, "windows": n}  # fmt: skip
        try:
            m = _prepare(net, cl, compiled, sizes.compile_backend)
            xi = x.to(memory_format=torch.channels_last_3d) if cl else x
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.no_grad(), amp:
                with Meter(device) as warm:
                    m(xi, t)
                with Meter(device) as me:
                    for _ in range(sizes.variant_iters):
                        m(xi, t)
            s = me.seconds / (sizes.variant_iters * n)
            row.update(first_call_s=warm.seconds, s_per_window=s, windows_per_s=1 / s,
                       peak_memory_gb=max(warm.peak_gb, me.peak_gb))  # fmt: skip
            per_window = s if per_window is None else min(per_window, s)
        except Exception as e:  # an unsupported variant is a result, not a crash
            if is_oom(e) and device.type == "cuda":
                torch.cuda.empty_cache()
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log.warning("(a) variant %s failed: %s", name, row["error"])
        rows.append(row)
    return rows


def _refine_run(
    label: str,
    net: torch.nn.Module,
    coarse: np.ndarray,
    plan,
    sampler: str,
    steps: int,
    target_steps: int,
    device: torch.device,
    amp: torch.dtype | None,
    schedule: NoiseSchedule,
    eta: float = 0.0,
    target: str = "image",
    residual_scale: float = 1.0,
    spacing: str = "linear",
    variance: str = "fixed",
) -> tuple[dict[str, Any], np.ndarray]:
    """One refinement over ``plan``; figures extrapolated ×``target_steps/steps`` if they differ."""
    smp = make_sampler(sampler, schedule, steps, eta=eta, clip_x0=target == "image",
                       spacing=spacing, variance=variance)  # fmt: skip
    with Meter(device) as me:
        res = refine_volume(
            coarse, Denoiser(net, schedule), smp, plan, seed=0, device=device,
            autocast_dtype=amp, show_progress=False, target=target, residual_scale=residual_scale,
        )  # fmt: skip
    s = plan.stats
    row: dict[str, Any] = {
        "run": label, "plan": s.kind, "sampler": sampler, "steps": steps,
        "windows": s.windows_run, "skipped": s.windows_skipped, "sequential_steps": s.waves,
        "unet_evaluations": res.unet_evaluations, "network_calls": res.network_calls,
        "wall_s": me.seconds, "windows_per_s": s.windows_run / me.seconds,
        "unet_evaluations_per_s": res.unet_evaluations / me.seconds,
        "peak_memory_gb": me.peak_gb, "extrapolated": target_steps != steps,
    }  # fmt: skip
    if target_steps != steps:
        k = target_steps / steps
        row.update(
            extrapolated_to_steps=target_steps,
            unet_evaluations_extrapolated=round(res.unet_evaluations * k),
            wall_s_extrapolated=me.seconds * k,
        )
    return row, res.refined


def part_a(sizes: Sizes, device: torch.device, budget: Budget) -> dict[str, Any]:
    cfg = sizes.refiner
    torch.manual_seed(0)
    net = build_unet(cfg.unet).to(device).eval()
    schedule = NoiseSchedule(cfg.schedule)
    out: dict[str, Any] = {"unet": dataclasses.asdict(cfg.unet), "window": cfg.window,
                           "volume": list(sizes.volume), "weights": "random"}  # fmt: skip
    out["variants"] = variants = time_variants(net, sizes, device, budget, compiled_ones=False)
    ok = [v for v in variants if "s_per_window" in v]
    if not ok:
        out["note"] = "no variant ran"
        return out
    out["best_variant"] = (eager := min(ok, key=lambda v: v["s_per_window"]))["variant"]
    out["end_to_end_variant"] = eager["variant"]
    m = _prepare(net, eager["channels_last_3d"], False, sizes.compile_backend)
    amp = torch.bfloat16 if eager["precision"] == "bf16" else None
    coarse = synthetic_coarse(sizes.volume)
    ours = make_plan(
        coarse.shape, PlanConfig(window=cfg.window, max_batch=sizes.max_batch), coarse=coarse
    )
    authors = official_plan(coarse.shape, window=cfg.window)
    runs = []
    probe = sizes.authors_probe_steps
    # (label, plan, sampler, steps, target steps, network, extra seconds to expect)
    items: list[tuple[str, Any, str, int, int, Any, float]] = [
        (f"authors' traversal + DDPM ({probe} steps timed)", authors, "ddpm", probe, 1000, m, 0.0)
    ] * (probe > 0) + [
        (f"ours + DPM-Solver++ {n}", ours, "dpm++", n, n, m, 0.0) for n in sizes.e2e_steps
    ]
    items += [(f"ours + distilled student {n}", ours, "distilled", n, n, m, 0.0)
              for n in sizes.student_steps]  # fmt: skip
    compiled = None  # the compiled network, once a run has paid its compilation
    compiled_ready = False
    if sizes.e2e_compile and sizes.e2e_steps:  # as `refine --compile`: one batch shape
        from realdeal.runtime.device import compiled_network

        compiled = compiled_network(m, sizes.max_batch, sizes.compile_backend)
        # the first compiled run pays the compilation (on an H100, paper refiner: 40 s at 4
        # windows a call, 104 s at 12; benchmarks/results/gpu_check.md); then each step count again,
        # compiled already: what every later volume of a `refine --compile` run costs
        n0 = sizes.e2e_steps[0]
        items += [(f"ours + DPM-Solver++ {n0}, compiled (incl. compiling)", ours, "dpm++", n0,
                   n0, compiled, 110.0)]  # fmt: skip
        items += [(f"ours + DPM-Solver++ {n}, compiled", ours, "dpm++", n, n, compiled, 0.0)
                  for n in sizes.e2e_steps]  # fmt: skip
    with torch.no_grad():
        for label, plan, sampler, steps, target, net_run, extra_s in items:
            warm = net_run is compiled and not extra_s
            if warm and not compiled_ready:
                # without the compiling run, this one would pay the compilation unbudgeted
                # and report it as a warm time
                budget.skipped.append({"item": f"(a) {label}", "reason": "its compilation did not run"})  # fmt: skip
                continue
            est = plan.stats.windows_run * steps * eager["s_per_window"] + extra_s
            if not budget.allows(f"(a) {label}", est):
                continue
            try:
                row, _ = _refine_run(
                    label, net_run, coarse, plan, sampler, steps, target, device, amp, schedule
                )
            except Exception as e:
                if not is_oom(e):
                    raise
                row = {"run": label, "error": f"out of memory: {str(e).splitlines()[0][:200]}"}
                torch.cuda.empty_cache()
            compiled_ready |= net_run is compiled and "error" not in row
            runs.append(row)
    out["runs"] = runs
    return out


def part_a_compiled(
    sizes: Sizes, device: torch.device, budget: Budget, out: dict[str, Any]
) -> None:
    """The ``torch.compile`` variants of (a), run last (compilation is slow and expendable);
    they join ``out["variants"]`` and may become ``best_variant``."""
    if "note" in out:
        return
    torch.manual_seed(0)
    net = build_unet(sizes.refiner.unet).to(device).eval()
    hint = min(v["s_per_window"] for v in out["variants"] if "s_per_window" in v)
    out["variants"] += time_variants(
        net, sizes, device, budget, compiled_ones=True, per_window=hint
    )
    ok = [v for v in out["variants"] if "s_per_window" in v]
    out["best_variant"] = min(ok, key=lambda v: v["s_per_window"])["variant"]


# -- (b) autoencoder and LDM training steps, LDM sampling -------------------------------------
def _train_step_times(
    name: str,
    model: torch.nn.Module,
    make_batch: Callable[[int], dict[str, torch.Tensor]],
    loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    sizes: Sizes,
    device: torch.device,
    budget: Budget,
) -> list[dict[str, Any]]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rows = []
    last = 0.0
    for b in sizes.train_batches:
        if not budget.allows(f"(b) {name} batch {b}", 3 * last * b):
            continue
        row: dict[str, Any] = {"model": name, "batch": b, "precision": sizes.train_precision}
        amp = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=sizes.train_precision == "bf16"
        )
        try:
            batch = make_batch(b)
            times = []
            for _ in range(3):  # the first step allocates optimiser state: reported apart
                with Meter(device) as me:
                    with amp:
                        value = loss(model, batch)
                    value.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                times.append(me.seconds)
                row["peak_memory_gb"] = max(row.get("peak_memory_gb", 0.0), me.peak_gb)
            row.update(first_step_s=times[0], step_s=float(np.mean(times[1:])),
                       loss=float(value.detach()))  # fmt: skip
            last = row["step_s"] / b
        except Exception as e:
            if not is_oom(e):
                raise
            row["error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        rows.append(row)
    opt.state.clear()
    return rows


def part_b(sizes: Sizes, device: torch.device, budget: Budget) -> dict[str, Any]:
    from realdeal.models.latent_scaling import OFFICIAL_RANGES, LatentScaler
    from realdeal.pipelines.ldm import LatentDiffusionPipeline
    from realdeal.training.autoencoder import AutoencoderTask
    from realdeal.training.ldm import LatentDiffusionTask

    torch.manual_seed(0)
    ae = Autoencoder(sizes.ae).to(device)
    zshape = latent_shape(sizes.ae_image, sizes.ae)
    ldm = build_unet(dataclasses.replace(sizes.ldm, in_channels=zshape[0], out_channels=zshape[0]))
    ldm = ldm.to(device)
    schedule = NoiseSchedule(preset("ldm", "paper").schedule)
    ae_task, ldm_task = AutoencoderTask("mse"), LatentDiffusionTask(schedule)
    out: dict[str, Any] = {"image": list(sizes.ae_image), "latent": list(zshape),
                           "weights": "random"}  # fmt: skip

    def ae_batch(b: int) -> dict[str, torch.Tensor]:
        return {"x": torch.rand(b, 1, *sizes.ae_image, device=device) * 2 - 1}

    def ldm_batch(b: int) -> dict[str, torch.Tensor]:
        return {"z": torch.randn(b, *zshape, device=device), "seed": torch.arange(b)}

    out["train"] = _train_step_times(
        "autoencoder", ae, ae_batch, ae_task.loss, sizes, device, budget
    ) + _train_step_times("ldm", ldm, ldm_batch, ldm_task.loss, sizes, device, budget)
    ldm_rows = [r for r in out["train"] if r["model"] == "ldm" and "step_s" in r]
    # a training step is ≈ 3 forward passes; sampling is steps forwards + one decode
    est = sizes.ldm_sample_steps * (ldm_rows[0]["step_s"] / 3 if ldm_rows else 1.0)
    if budget.allows("(b) LDM sampling", est):
        scaler = LatentScaler(*zip(*OFFICIAL_RANGES, strict=True))
        pipe = LatentDiffusionPipeline(ldm, schedule, scaler, ae, zshape, device)
        with Meter(device) as me:
            img = pipe(1, "ddim", sizes.ldm_sample_steps, precision=sizes.train_precision,
                       show_progress=False)  # fmt: skip
        out["sample"] = {"sampler": "ddim", "steps": sizes.ldm_sample_steps, "batch": 1,
                         "precision": sizes.train_precision, "wall_s": me.seconds, "peak_memory_gb": me.peak_gb,
                         "shape": list(img.shape[1:]), "finite": bool(torch.isfinite(img).all())}  # fmt: skip
    return out


# -- (c) quality reference with the shipped demo refiner --------------------------------------
def load_quality_input(path: str, crop: tuple[int, int, int] | None) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        arrays = {k: np.asarray(f[k]) for k in ("coarse", "original", "labels")}
    if crop is not None:
        c = [(s - k) // 2 for s, k in zip(arrays["coarse"].shape, crop, strict=True)]
        sl = tuple(slice(a, a + k) for a, k in zip(c, crop, strict=True))
        arrays = {k: v[sl] for k, v in arrays.items()}
    return arrays


def part_c(
    sizes: Sizes, device: torch.device, budget: Budget, input_path: str | None
) -> dict[str, Any]:
    from realdeal.pipelines.refiner import RefinerPipeline

    if not input_path or not Path(input_path).exists():
        budget.skipped.append({"item": "(c)", "reason": f"no quality input ({input_path})"})
        return {}
    if not budget.allows("(c)", 0.0):
        return {}
    data = load_quality_input(input_path, sizes.quality_crop)
    x, orig = data["coarse"].astype(np.float32), data["original"].astype(np.float32)
    ref = NoiseReference.of(orig, np.isin(data["labels"], (2, 41)))
    pipe = RefinerPipeline.from_checkpoint(sizes.refiner_checkpoint, device=device)
    amp = None  # the demo refiner is small: fp32 keeps the reference exact
    kw = dict(device=device, amp=amp, schedule=pipe.schedule, target=pipe.target,
              residual_scale=pipe.residual_scale)  # fmt: skip
    ours = make_plan(x.shape, PlanConfig(window=pipe.window, max_batch=sizes.max_batch), coarse=x)
    authors = official_plan(x.shape, window=pipe.window)
    ckpt = Path(sizes.refiner_checkpoint).resolve()
    out: dict[str, Any] = {"checkpoint": str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else str(ckpt),
                           "shape": list(x.shape), "input_quality": quality(x, x, ours, ref),
                           "original_quality": quality(orig, x, ours), "runs": []}  # fmt: skip
    per_call = None
    # ours with the residual refiner's default sampling (quadratic spacing, analytic
    # variance), and with linear spacing and fixed variance for comparison
    d = DEFAULT_SAMPLING["residual"]
    items = []
    if sizes.ours_sampling in ("both", "linear"):
        items += [(f"ours + DDIM η=1, {n} steps", ours, "ddim", n, 1.0, "linear", "fixed")
                  for n in sizes.ours_steps]  # fmt: skip
    if sizes.ours_sampling in ("both", "default"):
        items += [(f"ours + DDIM η=1, {n} {d.spacing} steps, {d.variance} variance", ours,
                   "ddim", n, 1.0, d.spacing, d.variance) for n in sizes.ours_steps]  # fmt: skip
    items.append((f"authors' traversal + DDPM {sizes.ref_steps}", authors, "ddpm",
                  sizes.ref_steps, 0.0, "linear", "fixed"))  # fmt: skip
    with torch.no_grad():
        for label, plan, sampler, steps, eta, spacing, variance in items:
            calls = plan.stats.batches * steps
            if not budget.allows(f"(c) {label}", calls * (per_call or 0.05)):
                continue
            row, y = _refine_run(label, pipe.unet, x, plan, sampler, steps, steps, eta=eta,
                                 spacing=spacing, variance=variance, **kw)  # fmt: skip
            row["quality"] = quality(y, x, plan, ref)
            # the latest run's rate: the first one also pays cuDNN's autotuning of each new
            # batch shape (on an H100, 2026-11-27: 95 ms a call at 10 steps, 13 ms at 20, so
            # the maximum overstated the 1,000-step reference 7× and skipped it)
            per_call = row["wall_s"] / row["network_calls"]
            out["runs"].append(row)
    ref = [r for r in out["runs"] if r["plan"] == "official"]
    for r in out["runs"]:
        if ref and r is not ref[0]:
            q, qa = r["quality"], ref[0]["quality"]
            r["quality_over_reference"] = {k: q[k] / qa[k] for k in q if qa.get(k)}
            r["evaluations_reference_over_ours"] = (
                ref[0]["unet_evaluations"] / r["unet_evaluations"]
            )
            r["wall_reference_over_ours"] = ref[0]["wall_s"] / r["wall_s"]
    return out


# -- report ------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = ".3g") -> str:
    return "" if v is None else (format(v, fmt) if isinstance(v, float) else str(v))


def _table(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table under a ``##`` title; an item's error message fills its row."""
    out = [f"## {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return out + ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows] + [""]


def markdown(res: dict[str, Any]) -> str:
    """The human-readable summary printed after the JSON is written."""
    lines = [f"# gpu_check on {res['device_name']} ({res['mode']})", ""]
    a, b = res["parts"].get("a", {}), res["parts"].get("b", {})
    if a.get("variants"):
        rows = [
            [v["variant"], v.get("error") or v["s_per_window"], v.get("windows_per_s"),
             v.get("peak_memory_gb"), v.get("first_call_s")]
            for v in a["variants"]
        ]  # fmt: skip
        header = ["variant", "s / window", "windows/s", "peak memory (GB)", "first call (s)"]
        lines += _table("(a) paper refiner, forward per variant", header, rows)
        lines += [f"best: {a.get('best_variant')}; end to end: {a.get('end_to_end_variant')}", ""]
    rows = []
    for r in a.get("runs", []) + res["parts"].get("c", {}).get("runs", []):
        if "error" in r:
            rows.append([r["run"], r["error"]])
            continue
        q = r.get("quality", {})
        wall = format(r["wall_s"], ".1f")
        if r["extrapolated"]:
            wall += f" ({r['wall_s_extrapolated']:.0f} at {r['extrapolated_to_steps']} steps, extrapolated)"  # fmt: skip
        rows.append(
            [r["run"], r["windows"], r["steps"], f"{r['unet_evaluations']:,}", wall,
             r["unet_evaluations_per_s"], r["windows_per_s"], r["peak_memory_gb"],
             q.get("sharpness"), q.get("noise_kl_wm"), q.get("seam_score")]
        )  # fmt: skip
    if rows:
        header = ["run", "windows", "steps", "U-Net evals", "wall (s)", "evals/s", "windows/s",
                  "peak memory (GB)", "sharpness", "noise KL WM", "seam"]  # fmt: skip
        lines += _table("refinement: (a) paper refiner, then (c) demo refiner", header, rows)
    if b.get("train"):
        rows = [
            [r["model"], r["batch"], r["precision"], r.get("error") or r["step_s"],
             r.get("peak_memory_gb")]
            for r in b["train"]
        ]  # fmt: skip
        header = ["model", "batch", "precision", "step (s)", "peak memory (GB)"]
        lines += _table("(b) training steps", header, rows)
    if "sample" in b:
        s = b["sample"]
        lines.append(f"LDM DDIM-{s['steps']} sample: {s['wall_s']:.1f} s, peak {s['peak_memory_gb']:.1f} GB")  # fmt: skip
    lines += [f"- ({k}) failed: {v['error']}" for k, v in res["parts"].items() if "error" in v]
    if a.get("compiled_error"):
        lines.append(f"- (a) compiled variants failed: {a['compiled_error']}")
    lines += [f"- skipped {s['item']}: {s['reason']}" for s in res["skipped"]]
    lines.append(f"\ntotal {res['seconds']:.0f} s of a {res['budget_s']:.0f} s budget")
    return "\n".join(lines)


def save(res: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``res`` as JSON atomically (a temporary name, then renamed)."""
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the parts asked for and return the JSON-able result. The JSON is rewritten after
    every part, so a run stopped from outside (a compilation overrunning the budget) keeps
    what it measured; ``complete`` says whether it got to the end."""
    sizes = tiny_sizes() if args.tiny else gpu_sizes()
    if args.compile_backend:
        sizes = dataclasses.replace(sizes, compile_backend=args.compile_backend)
    if args.variants:
        known = {variant_name(*v): v for v in VARIANTS + sizes.variants}
        if unknown := sorted(set(args.variants) - set(known)):
            raise SystemExit(f"gpu_check: unknown --variants {unknown}; known: {sorted(known)}")
        sizes = dataclasses.replace(sizes, variants=tuple(known[n] for n in args.variants))
    if args.e2e_steps is not None:
        sizes = dataclasses.replace(sizes, e2e_steps=tuple(args.e2e_steps))
    if args.max_batch is not None:
        sizes = dataclasses.replace(sizes, max_batch=args.max_batch)
    if args.e2e_compile:
        sizes = dataclasses.replace(sizes, e2e_compile=True)
    if args.authors_probe_steps is not None:
        sizes = dataclasses.replace(sizes, authors_probe_steps=args.authors_probe_steps)
    if args.ours_steps:
        sizes = dataclasses.replace(sizes, ours_steps=tuple(args.ours_steps))
    if args.student_steps:
        sizes = dataclasses.replace(sizes, student_steps=tuple(args.student_steps))
    sizes = dataclasses.replace(sizes, ours_sampling=args.ours_sampling)
    if args.refiner:
        if not Path(args.refiner).is_file():
            raise SystemExit(f"gpu_check: --refiner {args.refiner}: no such file")
        sizes = dataclasses.replace(sizes, refiner_checkpoint=Path(args.refiner))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per item: let cuDNN pick kernels
    budget = Budget(args.budget_s)
    res: dict[str, Any] = {
        "mode": "tiny (CPU code-path check, not a benchmark)" if args.tiny else "full",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "budget_s": args.budget_s, "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "parts": {}, "skipped": budget.skipped, "complete": False,
    }  # fmt: skip
    parts = {
        "a": lambda: part_a(sizes, device, budget),
        "b": lambda: part_b(sizes, device, budget),
        "c": lambda: part_c(sizes, device, budget, args.quality_input),
    }
    for part in args.parts:
        log.info("part (%s), %.0f s of the budget left", part, budget.left())
        # one device call is all there is: a part that fails is recorded, the next one runs
        res["parts"][part] = _guarded(f"({part})", parts[part])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        res["seconds"] = time.perf_counter() - budget.t0
        save(res, args.out)
    if "a" in res["parts"] and "error" not in res["parts"]["a"]:
        failed = _guarded(
            "(a) compiled", lambda: part_a_compiled(sizes, device, budget, res["parts"]["a"])
        )
        if failed:
            res["parts"]["a"]["compiled_error"] = failed["error"]
    res["seconds"] = time.perf_counter() - budget.t0
    res["complete"] = True
    return res


def _guarded(name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``{"error": …}`` (logged with its traceback) if it raises."""
    try:
        return fn()
    except Exception as e:
        log.exception("%s failed", name)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}


def main(argv: list[str] | None = None) -> None:
    out_dir = os.environ.get("OUT")
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="small shapes on CPU (a code-path check)")
    p.add_argument("--out", default=str(Path(out_dir) / "gpu_check.json") if out_dir else "gpu_check.json")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget (default 400)")
    p.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    p.add_argument("--quality-input", default=str(ROOT / ".device-wheels/quality_input.npz"))
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   help="the (a) variants to time, e.g. bf16 fp32+cl bf16+compile (default: all)")  # fmt: skip
    p.add_argument("--e2e-steps", type=int, nargs="*", metavar="N",
                   help="(a) ours end to end at these DPM-Solver++ step counts (default 10 20)")  # fmt: skip
    p.add_argument("--max-batch", type=int, metavar="N",
                   help="windows a network call for ours (default: the pipeline's, 8)")  # fmt: skip
    p.add_argument("--e2e-compile", action="store_true",
                   help="(a) also ours end to end compiled, as refine --compile")  # fmt: skip
    p.add_argument("--authors-probe-steps", type=int, metavar="N",
                   help="(a) DDPM steps timed on the authors' traversal (default 2; 0 = skip)")  # fmt: skip
    p.add_argument("--student-steps", type=int, nargs="+", metavar="N",
                   help="(a) also ours with a distilled student's sampler at these step counts "
                   "(timing only; default none)")  # fmt: skip
    p.add_argument("--ours-steps", type=int, nargs="+", metavar="N",
                   help="(c) ours at these DDIM step counts (default 10 20 50)")  # fmt: skip
    p.add_argument("--ours-sampling", choices=["both", "default", "linear"], default="both",
                   help="(c) ours with the default sampling (quadratic spacing, analytic "
                   "variance), the linear one (linear spacing, fixed variance), or both (default)")  # fmt: skip
    p.add_argument("--refiner", metavar="PATH",
                   help="(c) refiner checkpoint: a `realdeal train refiner` run's checkpoint.pt "
                   "or an export (default: the shipped demo refiner)")  # fmt: skip
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; --tiny eager)")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    res = run(args)
    save(res, args.out)
    print(markdown(res))
    print(f"\nwrote {args.out}")


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    main()
