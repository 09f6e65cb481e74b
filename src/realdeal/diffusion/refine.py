"""Whole-volume refinement: the masked reverse process run window by window over a plan.

This is where the three independent pieces meet (SPEC §5, paper §2.2): a
:class:`~realdeal.diffusion.denoiser.Denoiser` (the refiner network, ε- or v-prediction),
a sampler (DDPM, DDIM or DPM-Solver++, see :func:`make_refine_sampler`) and a
:class:`~realdeal.diffusion.plan.Plan` (which windows, in which order, with which masks).
For every batch of windows of the plan:

* ``M`` = the window's generate mask (voxels not yet refined); the rest is known;
* ``y_prev`` = refined values where ``M = 0``, Gaussian noise where ``M = 1``;
* ``x_T`` = noise where ``M = 1``, refined values where ``M = 0``;
* the network sees ``[x_t, x̂_patch, y_prev]`` on the channel axis; after every reverse step
  the known region is reset to the refined values (it stays clean, as in training);
* at the end only the window's write mask (``⊆ M``) is copied into the refined volume.

With ``target="residual"`` (a refiner trained on ``(x − x̂)/s``, see
:mod:`realdeal.training.refiner`) the same loop runs on the residual volume, which starts at
zero; the result is ``x̂ + s·r``. Skipped background windows keep the coarse value. Randomness comes from one
``torch.Generator`` seeded with ``seed``, consumed in plan order: the same input, plan, seed
and device give the same output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from realdeal.diffusion.denoiser import Denoiser, Prediction
from realdeal.diffusion.plan import Plan
from realdeal.diffusion.samplers import Sampler, make_sampler, sample
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)


def make_refine_sampler(
    name: str,
    schedule: NoiseSchedule,
    steps: int | None = None,
    eta: float = 0.0,
    clip_x0: bool = True,
) -> Sampler:
    """``ddpm`` (reference: every training step), ``ddim`` (default 50 steps, ``eta``) or
    ``dpm++`` (DPM-Solver++(2M), default 20 steps). ``clip_x0`` clamps each clean estimate
    to [−1, 1] (right for images; a residual-target refiner needs ``False``)."""
    if name in ("dpm++", "dpmpp", "dpm-solver++"):
        from realdeal.diffusion.dpm_solver import DPMSolverPP2M

        return DPMSolverPP2M(schedule, steps, clip_x0=clip_x0)
    if name in ("ddpm", "ddim"):
        return make_sampler(name, schedule, steps, eta=eta, clip_x0=clip_x0)  # type: ignore[arg-type]
    raise ConfigError(f"unknown sampler {name!r}; choose ddpm, ddim or dpm++")


class _BoundedResidual:
    """A residual refiner's clean estimate clamped so that ``x̂ + s·r̂₀`` stays in [−1, 1].

    This is the residual form of the samplers' image clipping (which a residual cannot use:
    its range is per voxel). Without it an ε-prediction's x̂₀ at high noise, amplified by
    ``1/√ᾱ_t`` (≈ 15 at t = 999), throws multistep solvers off. ε̂ is recomputed to match.
    """

    def __init__(self, denoiser: Denoiser, lo: torch.Tensor, hi: torch.Tensor):
        self.denoiser, self.lo, self.hi = denoiser, lo, hi

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        p = self.denoiser(x_t, t, cond)
        x0 = torch.minimum(torch.maximum(p.x0, self.lo), self.hi)
        ab = self.denoiser.schedule.alpha_bar(t).to(x_t).view(-1, *([1] * (x_t.ndim - 1)))
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return Prediction(x0=x0, eps=eps)


class _Truncated:
    """``sampler`` restricted to its timesteps ≤ ``t_max`` (SDEdit-style partial chain)."""

    def __init__(self, sampler: Sampler, t_max: int):
        ts = sampler.timesteps()
        self.base = sampler
        self._ts = [t for t in ts if t <= t_max] or [ts[-1]]

    def timesteps(self) -> list[int]:
        return list(self._ts)

    def step(self, *args, **kw):
        return self.base.step(*args, **kw)


@dataclasses.dataclass
class RefineResult:
    """The refined volume (input shape) and what it cost."""

    refined: np.ndarray
    plan: Plan
    unet_evaluations: int
    network_calls: int
    seconds: float
    peak_batch: int


def refine_volume(
    coarse: np.ndarray,
    denoiser: Denoiser,
    sampler: Sampler,
    plan: Plan,
    seed: int = 0,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
    target: str = "image",
    residual_scale: float = 1.0,
    strength: float = 1.0,
) -> RefineResult:
    """Refine a coarse volume ``(X, Y, Z)`` in [−1, 1] (background −1) over ``plan``.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the network under autocast; the
    sampler arithmetic stays float32. ``on_batch(i, n)`` is called after each batch.
    ``target``/``residual_scale``: what the network was trained to generate (``image`` or
    the residual ``(x − x̂)/residual_scale``). ``strength`` < 1 starts the chain at
    ``t₀ = strength·(T − 1)`` from the current value (coarse image, or zero residual) noised
    to ``t₀`` instead of from pure noise at T (SDEdit; the paper uses 1).
    """
    if not 0 < strength <= 1:
        raise ConfigError(f"strength must lie in (0, 1], got {strength}")
    if target not in ("image", "residual"):
        raise ConfigError(f"refine target must be image or residual, got {target!r}")
    coarse = np.asarray(coarse, dtype=np.float32)
    if coarse.ndim != 3:
        raise ConfigError(f"refine_volume expects a 3D volume, got shape {coarse.shape}")
    expected = plan.crop_pad.in_shape
    if tuple(coarse.shape) != tuple(expected):
        raise ConfigError(f"the plan was made for shape {expected}, the volume is {coarse.shape}")
    device = torch.device(device)
    xp = torch.from_numpy(plan.pad(coarse)).to(device)
    residual = target == "residual"
    # The state being generated: the refined volume (skipped background keeps the coarse
    # value) or the residual volume (zero = the coarse value).
    yp = torch.zeros_like(xp) if residual else xp.clone()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    batches = plan.batches()
    t_start = None
    if strength < 1:
        t_start = round(strength * (denoiser.schedule.num_train_timesteps - 1))
        sampler = _Truncated(sampler, t_start)  # type: ignore[assignment]
        t_start = sampler.timesteps()[0]
    steps = len(sampler.timesteps())
    evals = calls = peak = 0
    t0 = time.perf_counter()
    amp = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    bar = progress(total=len(batches), desc="refine", unit="batch") if show_progress else None
    for b, windows in enumerate(batches):
        sls = [w.slices for w in windows]
        m = torch.stack([torch.from_numpy(plan.generate_mask(w)) for w in windows])[:, None]
        m = m.to(device=device, dtype=torch.float32)
        known = torch.stack([yp[s] for s in sls])[:, None]
        xhat = torch.stack([xp[s] for s in sls])[:, None]
        y_prev = known * (1 - m) + torch.randn(known.shape, generator=gen, device=device) * m
        noise = torch.randn(known.shape, generator=gen, device=device)
        if t_start is None:
            x_T = noise * m + known * (1 - m)
        else:
            ab = float(denoiser.schedule.alpha_bar(t_start))
            x_T = (ab**0.5 * known + (1 - ab) ** 0.5 * noise) * m + known * (1 - m)
        cond = torch.cat([xhat, y_prev], dim=1)
        den = denoiser
        if residual:
            s = float(residual_scale)
            den = _BoundedResidual(denoiser, (-1.0 - xhat) / s, (1.0 - xhat) / s)

        def reset_known(i: int, t_prev: int, x: torch.Tensor, m=m, known=known) -> torch.Tensor:
            return x * m + known * (1 - m)

        with amp:
            out = sample(
                den,
                sampler,
                x_T,
                cond=cond,
                generator=gen,
                callback=reset_known,
                show_progress=False,
            ).float()
        for k, (w, s) in enumerate(zip(windows, sls, strict=True)):
            wm = torch.from_numpy(plan.write_mask(w)).to(device)
            region = yp[s]
            region[wm] = out[k, 0][wm]
        evals += len(windows) * steps
        calls += steps
        peak = max(peak, len(windows))
        if on_batch is not None:
            on_batch(b, len(batches))
        if bar is not None:
            bar.set_postfix(wave=windows[0].wave, windows=len(windows))
            bar.update(1)
    if bar is not None:
        bar.close()
    if residual:
        yp = (xp + float(residual_scale) * yp).clamp(-1.0, 1.0)
    refined = plan.unpad(yp.cpu().numpy())
    return RefineResult(refined, plan, evals, calls, time.perf_counter() - t0, peak)
