"""Whole-volume refinement: the masked reverse process run window by window over a plan.

This is where the three independent pieces meet (paper §2.2, docs/method.md#spec-5): a
:class:`~realdeal.diffusion.denoiser.Denoiser` (the refiner network, ε- or v-prediction),
a sampler (DDPM, DDIM or DPM-Solver++, see :mod:`realdeal.diffusion.registry`) and a
:class:`~realdeal.inference.plan.Plan` (which windows, in which order, with which masks).
For every batch of windows of the plan:

* ``M`` = the window's generate mask (voxels not yet refined); the rest is known;
* ``y_prev`` = refined values where ``M = 0``, Gaussian noise where ``M = 1``;
* ``x_T`` = noise where ``M = 1``, refined values where ``M = 0``;
* the network sees ``[x_t, x̂_patch, y_prev]`` on the channel axis (built by
  :mod:`realdeal.inference.conditioning`, as in training); after every reverse step the known
  region is reset to the refined values (it stays clean, as in training);
* at the end only the window's write mask (``⊆ M``) is copied into the refined volume.

With ``target="residual"`` (a refiner trained on ``(x − x̂)/s``, see
:mod:`realdeal.training.refiner`) the same loop runs on the residual volume, which starts at
zero; the result is ``x̂ + s·r``. Skipped background windows keep the coarse value.

Randomness: every window draws from its own stream (:class:`~realdeal.runtime.rng.SampleStreams`,
on the device), seeded with :func:`~realdeal.runtime.rng.sample_seed` ``(seed, window.index)``
— its ``y_prev`` noise, then its ``x_T`` noise, then each stochastic step's noise. A window's
numbers therefore depend only on the volume's seed and its place in the plan, not on the
batch it is diffused in; and since the windows of one wave never share an unrefined voxel,
the refined volume does not depend on how waves are split into batches (``max_batch``) — bit
for bit when the network's output for a window does not depend on the rest of its batch, up
to float rounding with real convolution kernels. The same input, plan, seed and device give
the same output. (Until this scheme, one generator per volume was consumed batch by batch, so
the output changed with ``max_batch``.)

:func:`refine_volumes` refines several volumes at once: a network call takes the next batch
of several volumes (bounded by ``max_batch`` windows), while each volume keeps its own plan,
streams and multistep sampler state — so each result is the one :func:`refine_volume` gives
that volume alone (up to the float rounding of batched kernels), however volumes are grouped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import BoundedResidual, truncate
from realdeal.diffusion.samplers import Group, Sampler, sample_groups
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError
from realdeal.inference.conditioning import keep_known, start_inputs
from realdeal.inference.plan import Plan, Window
from realdeal.runtime.rng import SampleStreams, sample_seed
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RefineResult:
    """The refined volume (input shape) and what it cost: ``seconds`` from its start to its
    end (volumes refined together overlap), ``compute_seconds`` its share of the network calls
    it took part in (by windows), which add up over volumes to the time of all calls."""

    refined: np.ndarray
    plan: Plan
    unet_evaluations: int
    network_calls: int
    seconds: float
    peak_batch: int
    compute_seconds: float = 0.0


@dataclasses.dataclass
class RefineJob:
    """One volume for :func:`refine_volumes`: the coarse ``(X, Y, Z)`` array in [−1, 1], its
    plan and its seed; ``key`` is the caller's handle (e.g. the file it came from)."""

    coarse: np.ndarray
    plan: Plan
    seed: int = 0
    key: Any = None


class _Volume:
    """One volume in flight: its padded state, its next batch and that batch's streams."""

    def __init__(self, job: RefineJob, sampler: Sampler, device: torch.device, residual: bool):
        coarse = np.asarray(job.coarse, dtype=np.float32)
        if coarse.ndim != 3:
            raise ConfigError(f"refine_volume expects a 3D volume, got shape {coarse.shape}")
        expected = job.plan.crop_pad.in_shape
        if tuple(coarse.shape) != tuple(expected):
            raise ConfigError(
                f"the plan was made for shape {expected}, the volume is {coarse.shape}"
            )
        self.job, self.plan = job, job.plan
        self.xp = torch.from_numpy(job.plan.pad(coarse)).to(device)
        # The state being generated: the refined volume (skipped background keeps the coarse
        # value) or the residual volume (zero = the coarse value).
        self.yp = torch.zeros_like(self.xp) if residual else self.xp.clone()
        self.seed = int(job.seed)
        self.streams: SampleStreams | None = None
        """The random streams of the next batch's windows (made by :meth:`inputs`)."""
        # Samplers hold no per-run state (a multistep one's lives in the sampling loop), so
        # the volumes share one.
        self.sampler = sampler
        self.batches = job.plan.batches()
        self.next = self.evals = self.calls = self.peak = 0
        self.t0 = time.perf_counter()
        self.busy = 0.0
        """Seconds of network calls attributed to this volume (its windows' share of each)."""

    @property
    def done(self) -> bool:
        return self.next >= len(self.batches)

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.batches[self.next]

    def window_streams(self) -> SampleStreams:
        """Fresh random streams of the next batch's windows, one per window, each seeded with
        ``sample_seed(seed, window.index)`` (so independent of the batch the window is in)."""
        seeds = [sample_seed(self.seed, w.index) for w in self.windows]
        return SampleStreams(seeds, device=self.xp.device)

    def inputs(self, schedule: NoiseSchedule, t_start: int | None):
        """(M, known, x̂, x_T, cond) of the next batch; each window's noise comes from its own
        stream (:meth:`window_streams`, kept as :attr:`streams` for the sampler's steps)."""
        device = self.xp.device
        sls = [w.slices for w in self.windows]
        m = torch.stack([torch.from_numpy(self.plan.generate_mask(w)) for w in self.windows])
        m = m[:, None].to(device=device, dtype=torch.float32)
        known = torch.stack([self.yp[s] for s in sls])[:, None]
        xhat = torch.stack([self.xp[s] for s in sls])[:, None]
        self.streams = self.window_streams()
        g = self.streams.randn(known.shape, device=device)
        noise = self.streams.randn(known.shape, device=device)
        ab = None if t_start is None else float(schedule.alpha_bar(t_start))
        x_T, cond = start_inputs(known, xhat, m, g, noise, ab)
        return m, known, xhat, x_T, cond

    def write(self, out: torch.Tensor, steps: int) -> None:
        """Copy each window's write mask of ``out`` ``(B, 1, w, w, w)`` into the state."""
        for k, w in enumerate(self.windows):
            wm = torch.from_numpy(self.plan.write_mask(w)).to(self.xp.device)
            region = self.yp[w.slices]
            region[wm] = out[k, 0][wm]
        self.evals += len(self.windows) * steps
        self.calls += steps
        self.peak = max(self.peak, len(self.windows))
        self.next += 1

    def result(self, residual_scale: float | None) -> RefineResult:
        yp = self.yp
        if residual_scale is not None:
            yp = (self.xp + float(residual_scale) * yp).clamp(-1.0, 1.0)
        refined = self.plan.unpad(yp.cpu().numpy())
        seconds = time.perf_counter() - self.t0
        return RefineResult(
            refined, self.plan, self.evals, self.calls, seconds, self.peak, self.busy
        )


def refine_volumes(
    jobs: Iterable[RefineJob],
    denoiser: Denoiser,
    sampler: Sampler,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    max_batch: int | None = None,
    max_volumes: int | None = None,
    show_progress: bool = True,
    target: str = "image",
    residual_scale: float = 1.0,
    strength: float = 1.0,
) -> Iterator[tuple[RefineJob, RefineResult]]:
    """Refine several volumes, sharing network calls between them; yields ``(job, result)``
    as each volume finishes.

    Each volume runs its own plan's batches in order with its own sampler state, each window
    with its own random stream (derived from ``job.seed`` and the window, see the module
    docstring: so a volume does not depend on ``max_batch`` either); a network call takes
    the next batch of as many volumes in flight as fit in ``max_batch`` windows (``None``: no
    bound), so every result equals :func:`refine_volume` of that volume alone — bit for bit
    when the network's output for a window does not depend on the rest of its batch; real
    convolution kernels change with the batch size in the last float bits. The grouping is deterministic (first fit in
    arrival order), so the same jobs in the same order always give the same bits on the same
    device and thread count. ``jobs`` is read lazily: at most
    ``max_volumes`` (default ``max_batch``, else 8) volumes are held at once, and a finished
    one makes room for the next. The other arguments are those of :func:`refine_volume`.
    """
    sampler, t_start = truncate(sampler, strength, denoiser.schedule.num_train_timesteps)
    if target not in ("image", "residual"):
        raise ConfigError(f"refine target must be image or residual, got {target!r}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
    device = torch.device(device)
    residual = target == "residual"
    scale = residual_scale if residual else None
    steps = len(sampler.timesteps())
    capacity = max_volumes or max_batch or 8
    amp = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    pending = iter(jobs)
    active: list[_Volume] = []
    bar = progress(total=0, desc="refine", unit="batch") if show_progress else None
    while True:
        for v in _admit(pending, active, capacity, sampler, device, residual):
            if bar is not None:
                bar.total += len(v.batches)
                bar.refresh()
        for v in [v for v in active if v.done]:  # nothing to diffuse (all background)
            active.remove(v)
            yield v.job, v.result(scale)
        if not active:
            break
        group = _first_fit(active, max_batch)
        size = sum(len(v.windows) for v in group)
        t0 = time.perf_counter()
        _run_batch(group, denoiser, t_start, amp, residual, residual_scale, steps)
        took = time.perf_counter() - t0
        for v in group:  # each volume's share of the shared network call
            v.busy += took * len(v.batches[v.next - 1]) / size
        for v in group:
            if bar is not None:
                bar.set_postfix(volumes=len(group), windows=size)
                bar.update(1)
            if v.done:
                active.remove(v)
                yield v.job, v.result(scale)
    if bar is not None:
        bar.close()


def _admit(pending, active, capacity, sampler, device, residual) -> list[_Volume]:
    """Take jobs from ``pending`` into ``active`` until it holds ``capacity``; the new ones."""
    new = []
    while len(active) < capacity:
        job = next(pending, None)
        if job is None:
            break
        active.append(_Volume(job, sampler, device, residual))
        new.append(active[-1])
    return new


def _first_fit(active: list[_Volume], max_batch: int | None) -> list[_Volume]:
    """The volumes whose next batches share a network call: first fit in arrival order (the
    oldest volume always runs, later ones join while their next batch fits)."""
    group, size = [], 0
    for v in active:
        n = len(v.windows)
        if group and max_batch is not None and size + n > max_batch:
            continue
        if group and v.plan.window_shape != group[0].plan.window_shape:
            raise ConfigError("volumes refined together must use the same window size")
        group.append(v)
        size += n
    return group


def _run_batch(group, denoiser, t_start, amp, residual, residual_scale, steps) -> None:
    """One reverse chain over the next batch of every volume in ``group``, in one batch."""
    parts = [v.inputs(denoiser.schedule, t_start) for v in group]
    m, known, xhat, x_T, cond = (torch.cat(t) for t in zip(*parts, strict=True))
    den = denoiser
    if residual:
        s = float(residual_scale)
        # the generated brain voxels: unknown and inside the coarse brain (DDIM's analytic
        # variance adds noise there only, so the background stays clean)
        weight = ((m > 0.5) & (xhat > -0.95)).to(x_T.dtype)
        den = BoundedResidual(denoiser, (-1.0 - xhat) / s, (1.0 - xhat) / s, weight)
    groups, start = [], 0
    for v in group:
        n = len(v.windows)
        groups.append(Group(slice(start, start + n), v.sampler, v.streams))
        start += n

    def reset_known(i: int, t_prev: int, x: torch.Tensor) -> torch.Tensor:
        return keep_known(x, known, m)

    with amp:
        out = sample_groups(den, groups, x_T, cond, reset_known, show_progress=False).float()
    for v, g in zip(group, groups, strict=True):
        v.write(out[g.rows], steps)


def refine_volume(
    coarse: np.ndarray,
    denoiser: Denoiser,
    sampler: Sampler,
    plan: Plan,
    seed: int = 0,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    show_progress: bool = True,
    target: str = "image",
    residual_scale: float = 1.0,
    strength: float = 1.0,
) -> RefineResult:
    """Refine a coarse volume ``(X, Y, Z)`` in [−1, 1] (background −1) over ``plan``.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the network under autocast; the
    sampler arithmetic stays float32.
    ``target``/``residual_scale``: what the network was trained to generate (``image`` or
    the residual ``(x − x̂)/residual_scale``). ``strength`` < 1 starts the chain at
    ``t₀ = strength·(T − 1)`` from the current value (coarse image, or zero residual) noised
    to ``t₀`` instead of from pure noise at T (SDEdit; the paper uses 1).
    """
    ((_, result),) = refine_volumes(
        [RefineJob(coarse, plan, seed)], denoiser, sampler, device, autocast_dtype,
        show_progress=show_progress, target=target, residual_scale=residual_scale,
        strength=strength,
    )  # fmt: skip
    return result
