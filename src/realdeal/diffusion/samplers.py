"""Reverse-process update rules over a :class:`~realdeal.diffusion.denoiser.Denoiser`, and the loop.

A sampler only knows the schedule: ``timesteps()`` lists the steps (descending) and
``step(x_t, t, t_prev, pred, generator, state)`` returns ``(x_{t_prev}, state)``. A sampler
object holds no per-run state: a multistep rule (DPM-Solver++(2M),
:mod:`realdeal.diffusion.dpm_solver`) returns what it must remember as ``state``, and the
caller passes it to the next step of the same chain (``None`` on a chain's first step), as
k-diffusion's loops keep ``old_denoised``. So one sampler serves any number of chains at once.
:func:`sample` runs the loop and calls ``callback(i, t_prev, x)`` after every step so that a
caller can, e.g., reset a known region (the refiner's masked loop) without either side
knowing about the other. Strided DDPM uses the effective β between visited steps,
β' = 1 − ᾱ_t / ᾱ_{t_prev}. Samplers are made by name in :mod:`realdeal.diffusion.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch

from realdeal.diffusion.denoiser import Denoiser, Prediction
from realdeal.diffusion.registry import SPACINGS, VARIANCES, check_eta
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError
from realdeal.runtime.rng import NoiseSource, randn

StepCallback = Callable[[int, int, torch.Tensor], "torch.Tensor | None"]


class Sampler(Protocol):
    """A reverse-process update rule over a noise schedule."""

    schedule: NoiseSchedule
    num_steps: int

    def timesteps(self) -> list[int]:
        """Timesteps visited, descending; the step after the last one is t = −1 (clean)."""
        ...

    def step(
        self,
        x_t: torch.Tensor,
        t: int,
        t_prev: int,
        pred: Prediction,
        generator: NoiseSource = None,
        state: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        """``(x_{t_prev}, state)`` from x_t and the denoiser's estimates at t.

        ``state`` is what the previous step of this chain returned (``None`` on its first
        step); the returned one goes to the next step. Single-step rules return ``None``.
        A stochastic rule draws all its noise from ``generator`` through
        :func:`realdeal.runtime.rng.randn`: with per-sample
        :class:`~realdeal.runtime.rng.SampleStreams` each row's noise comes from its own
        stream, so a sample does not depend on the batch it is drawn in.
        """
        ...


def strided_timesteps(num_train: int, num_steps: int, spacing: str = "linear") -> list[int]:
    """``num_steps`` strictly descending timesteps from T−1 to 0.

    ``linear``: evenly spread (MONAI DDIM's list). ``quadratic``: ``t = (T−1)·u²`` for ``u``
    evenly spread from 1 to 0 (the DDIM paper's quadratic spacing), so the steps shrink toward
    t = 0; ties among the smallest are moved up to keep the list strictly descending.
    Unlike "leading" spacing (0, T/n, …) both always start at the noisiest step T−1, which
    a model trained on t ∈ {0, …, T−1} expects pure noise at. Each step then goes to the
    next listed timestep (not t − T/n as MONAI's ``step`` assumes).
    """
    if not 1 <= num_steps <= num_train:
        raise ConfigError(f"number of sampling steps must be in 1..{num_train}, got {num_steps}")
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose {', '.join(SPACINGS)}")
    if num_steps == 1:
        return [num_train - 1]
    if spacing == "linear":  # exactly the list of earlier versions (same outputs, same seeds)
        t = torch.linspace(num_train - 1, 0, num_steps, dtype=torch.float64)
    else:
        t = (num_train - 1) * torch.linspace(1.0, 0.0, num_steps, dtype=torch.float64) ** 2
    ts = t.round().long().tolist()
    for i in range(len(ts) - 2, -1, -1):  # from t = 0 upward: each above the next
        ts[i] = max(ts[i], ts[i + 1] + 1)
    return [int(t) for t in ts]


def halving_timesteps(num_train: int, num_steps: int, spacing: str = "linear") -> list[int]:
    """The time grid of a progressively distilled student: ``num_steps`` strictly descending
    timesteps ``t_i = round(T·(1 − i/N)^p) − 1`` for ``i = 0 … N−1`` (``p`` = 1 ``linear``,
    2 ``quadratic``); the step after the last one goes to t = −1 (clean data).

    Unlike :func:`strided_timesteps` the grid's end is t = −1 itself (the ``linear`` grid is
    diffusers' "trailing" spacing: 999, 899, …, 99 for 10 steps), so that halving nests: the
    grid of ``N`` steps is every other point of the grid of ``2N`` steps, and one student step
    covers exactly two teacher steps (Salimans & Ho 2022). A count whose rounded grid would
    repeat a timestep or reach −1 (``quadratic`` beyond √T steps) is refused.
    """
    if not 1 <= num_steps <= num_train:
        raise ConfigError(f"number of sampling steps must be in 1..{num_train}, got {num_steps}")
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose {', '.join(SPACINGS)}")
    power = 1 if spacing == "linear" else 2
    ts = [round(num_train * (1 - i / num_steps) ** power) - 1 for i in range(num_steps)]
    if ts[-1] < 0 or any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ConfigError(
            f"{num_steps} {spacing} steps do not fit {num_train} timesteps as a halving grid "
            "(timesteps would repeat); use fewer steps or linear spacing"
        )
    return ts


class _Base:
    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        clip_x0: bool = True,
        spacing: str = "linear",
    ):
        self.schedule = schedule
        # ``None`` means the default; 0 or a negative count must fail, not become the default
        self.num_steps = schedule.num_train_timesteps if num_steps is None else num_steps
        self.clip_x0 = clip_x0
        self._timesteps = strided_timesteps(schedule.num_train_timesteps, self.num_steps, spacing)

    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _x0(self, pred: Prediction) -> torch.Tensor:
        return pred.x0.clamp(-1.0, 1.0) if self.clip_x0 else pred.x0


class DDPMSampler(_Base):
    """Ancestral sampling from the posterior q(x_{t'} | x_t, x̂_0) ("fixed small" variance)."""

    def step(self, x_t, t, t_prev, pred, generator=None, state=None):
        ab_t = float(self.schedule.alpha_bar(t))
        ab_p = float(self.schedule.alpha_bar(t_prev))
        beta = 1.0 - ab_t / ab_p
        c0 = ab_p**0.5 * beta / (1.0 - ab_t)
        ct = (1.0 - beta) ** 0.5 * (1.0 - ab_p) / (1.0 - ab_t)
        mean = c0 * self._x0(pred) + ct * x_t
        if t_prev < 0:
            return mean, None
        var = max((1.0 - ab_p) / (1.0 - ab_t) * beta, 1e-20)
        noise = randn(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
        return mean + var**0.5 * noise, None


class DDIMSampler(_Base):
    """DDIM (Song et al. 2021); ``eta = 0`` is deterministic, ``eta = 1`` is DDPM-like.

    ``variance="analytic"`` adds the variance a large step loses because x̂₀ is a mean
    (Bao et al. 2022, Analytic-DPM, Theorem 1): the step's x_{t'} has the coefficient
    ``c = √(1−ᾱ_{t'} − σ²) − √(ᾱ_{t'}(1−ᾱ_t)/ᾱ_t)`` on ε̂, and the error of ε̂ has variance
    ``1 − Γ`` per voxel with ``Γ = E‖ε̂‖²/d``; so ``c²(1 − Γ)`` more noise is added. Γ is
    estimated per sample from the step's own ε̂ (over ``Prediction.weight`` when given) rather
    than from the training set, so windows of plain background (Γ ≈ 1) get none.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = 50,
        clip_x0: bool = True,
        eta: float = 0.0,
        spacing: str = "linear",
        variance: str = "fixed",
    ):
        super().__init__(schedule, num_steps, clip_x0, spacing)
        if variance not in VARIANCES:
            raise ConfigError(f"unknown DDIM variance {variance!r}; choose {', '.join(VARIANCES)}")
        self.eta, self.variance = check_eta(eta), variance

    def step(self, x_t, t, t_prev, pred, generator=None, state=None):
        ab_t = float(self.schedule.alpha_bar(t))
        ab_p = float(self.schedule.alpha_bar(t_prev))
        sigma = self.eta * ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)) ** 0.5
        x = ab_p**0.5 * self._x0(pred) + max(1 - ab_p - sigma**2, 0.0) ** 0.5 * pred.eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
        if self.variance == "analytic" and t_prev >= 0:
            x = x + self._analytic_noise(pred, ab_t, ab_p, sigma, generator)
        return x, None

    def _analytic_noise(self, pred, ab_t: float, ab_p: float, sigma: float, generator):
        """The noise Analytic-DPM adds to a step from ``ab_t`` to ``ab_p`` (see the class)."""
        c = max(1 - ab_p - sigma**2, 0.0) ** 0.5 - (ab_p * (1 - ab_t) / ab_t) ** 0.5
        eps = pred.eps.float()
        w = torch.ones_like(eps) if pred.weight is None else pred.weight.to(eps)
        dims = tuple(range(1, eps.ndim))
        gamma = (eps.square() * w).sum(dims, keepdim=True) / w.sum(dims, keepdim=True).clamp(min=1)
        std = (c * c * (1 - gamma).clamp(min=0)).sqrt()
        z = randn(eps.shape, generator, device=eps.device, dtype=eps.dtype)
        return (std * z * w).to(pred.eps.dtype)


class DistilledSampler(DDIMSampler):
    """Deterministic DDIM (η = 0) on the halving grid of :func:`halving_timesteps`: the sampler
    a progressively distilled student runs at its native step count (Salimans & Ho 2022,
    "Progressive Distillation for Fast Sampling of Diffusion Models"), and the one its teacher
    runs at twice the steps during distillation (:mod:`realdeal.training.distill`). It draws
    no noise; a chain's only randomness is its start noise."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = 4,
        clip_x0: bool = True,
        spacing: str = "linear",
    ):
        super().__init__(schedule, 4 if num_steps is None else num_steps, clip_x0, 0.0, spacing)
        self._timesteps = halving_timesteps(schedule.num_train_timesteps, self.num_steps, spacing)


@dataclasses.dataclass
class Group:
    """Rows ``rows`` of a batch that step with their own sampler and noise source (a
    generator or per-row :class:`~realdeal.runtime.rng.SampleStreams`) and, inside
    :func:`sample_groups`, their own multistep state."""

    rows: slice
    sampler: Sampler
    generator: NoiseSource = None


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    sampler: Sampler,
    x_T: torch.Tensor,
    cond: torch.Tensor | None = None,
    generator: NoiseSource = None,
    callback: StepCallback | None = None,
    show_progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Run the reverse process from noise ``x_T`` ``(B, C, ...)`` to x_0.

    ``generator``: where the steps' noise comes from — one ``torch.Generator`` for the whole
    batch, or :class:`~realdeal.runtime.rng.SampleStreams` (one stream per row, so that each
    sample is the one it would be sampled alone or in any other batch).
    ``callback(i, t_prev, x)`` is called after step ``i`` (x is now at ``t_prev``); if it
    returns a tensor, that replaces x.
    """
    group = Group(slice(0, x_T.shape[0]), sampler, generator)
    return sample_groups(denoiser, [group], x_T, cond, callback, show_progress, desc)


@torch.no_grad()
def sample_groups(
    denoiser: Denoiser,
    groups: list[Group],
    x_T: torch.Tensor,
    cond: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    show_progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """:func:`sample` for a batch made of independent groups of rows (e.g. several volumes).

    One network call per step covers the whole batch; each group then steps with its own
    sampler, its own multistep state (one chain per group, started here) and draws its noise
    from its own generator, so a group's result is the one it would get sampled alone (given
    a network whose output for a row does not depend on the other rows). ``groups`` split
    the rows into consecutive slices, in order; all their samplers must visit the same
    timesteps.
    """
    from realdeal.utils.progress import progress

    ts = groups[0].sampler.timesteps()
    if any(g.sampler.timesteps() != ts for g in groups):
        raise ConfigError("groups sampled together must visit the same timesteps")
    whole = len(groups) == 1 and groups[0].rows == slice(0, x_T.shape[0])
    states: list[Any] = [None] * len(groups)
    x = x_T
    bar = progress(total=len(ts), desc=desc, unit="step") if show_progress else None
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        pred = denoiser(x, tt, cond)
        parts = []
        for k, g in enumerate(groups):
            p = pred if whole else Prediction(
                pred.x0[g.rows], pred.eps[g.rows],
                None if pred.weight is None else pred.weight[g.rows],
            )  # fmt: skip
            xg, states[k] = g.sampler.step(
                x if whole else x[g.rows], t, t_prev, p, g.generator, states[k]
            )
            parts.append(xg)
        x = parts[0] if whole else torch.cat(parts)
        if callback is not None:
            out = callback(i, t_prev, x)
            if out is not None:
                x = out
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x
