"""The sampler registry: every sampler by name, and the one table of sampling defaults.

``ddpm``, ``ddim`` and ``dpm++`` (:mod:`realdeal.diffusion.samplers`,
:mod:`realdeal.diffusion.dpm_solver`) are made by :func:`make_sampler` for the LDM and the
refiner alike. :data:`SAMPLERS` gives each sampler's default step count and
:data:`DEFAULT_SAMPLING` what each model runs when no sampler is asked for; the Python API,
``DemoConfig`` and the command-line help all read these two tables. The ``--strength``
truncation (:func:`truncate`) and a residual refiner's bounded clean estimate
(:class:`BoundedResidual`) live here too, as wrappers around a sampler and a denoiser.

This module imports torch only when a sampler is made, so that the command line can build
its help text from the tables without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from realdeal.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from realdeal.diffusion.denoiser import Denoiser, Prediction
    from realdeal.diffusion.samplers import Sampler
    from realdeal.diffusion.schedule import NoiseSchedule

SamplerName = Literal["ddpm", "ddim", "dpm++"]


class SamplerSpec(NamedTuple):
    """A registered sampler: its class (``module:name``), default step count (``None``: every
    training step) and whether it takes DDIM's η."""

    target: str
    steps: int | None
    eta: bool
    summary: str


#: Every sampler by name.
SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("realdeal.diffusion.samplers:DDPMSampler", None, False, "ancestral DDPM"),
    "ddim": SamplerSpec("realdeal.diffusion.samplers:DDIMSampler", 50, True, "DDIM"),
    "dpm++": SamplerSpec(
        "realdeal.diffusion.dpm_solver:DPMSolverPP2M", 20, False, "DPM-Solver++(2M)"
    ),
}
ALIASES = {"dpmpp": "dpm++", "dpm-solver++": "dpm++"}

#: Timestep spacings of every sampler: ``linear`` (evenly spread) or ``quadratic`` (denser at
#: low noise, where a residual refiner's fine texture is decided); see
#: :func:`~realdeal.diffusion.samplers.strided_timesteps`.
SPACINGS = ("linear", "quadratic")
#: DDIM's step variance: ``fixed`` (η alone) or ``analytic`` (plus what x̂₀'s uncertainty
#: leaves out; :class:`~realdeal.diffusion.samplers.DDIMSampler`).
VARIANCES = ("fixed", "analytic")


#: The range of DDIM's η (``--eta``): a step's noise is σ = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 −
#: ᾱ_t/ᾱ_{t'})), so 0 is deterministic DDIM and 1 the DDPM posterior's variance. Above 1, σ² can
#: exceed 1 − ᾱ_{t'} (the ε̂ coefficient √(1 − ᾱ_{t'} − σ²) is then clamped to 0: more noise
#: than the forward process holds); below 0 the noise term is dropped but σ² still counted.
ETA_RANGE = (0.0, 1.0)


def check_number(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``); else a one-line :class:`~realdeal.errors.ConfigError` naming ``name`` (the
    setting and its flag, e.g. ``"eta (--eta)"``). NaN and ±inf are refused: they would only
    turn every voxel into NaN."""
    import math
    import numbers

    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not (lo < v if lo_open else lo <= v) or v > hi:
        raise ConfigError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def check_eta(eta: Any) -> float:
    """DDIM's η as a float, refused unless finite and in :data:`ETA_RANGE`."""
    return check_number(eta, "eta (--eta, DDIM η)", *ETA_RANGE)


class _SamplingFields(NamedTuple):
    sampler: SamplerName
    steps: int | None
    eta: float = 0.0
    spacing: str = "linear"
    variance: str = "fixed"


class Sampling(_SamplingFields):
    """A sampler with its step count (``None``: the sampler's default), η and timestep
    spacing (``linear`` or ``quadratic``, see
    :func:`~realdeal.diffusion.samplers.strided_timesteps`).

    η is checked when a ``Sampling`` is made (:func:`check_eta`: finite, in [0, 1])."""

    __slots__ = ()

    def __new__(
        cls,
        sampler: SamplerName,
        steps: int | None,
        eta: float = 0.0,
        spacing: str = "linear",
        variance: str = "fixed",
    ) -> Sampling:
        return super().__new__(cls, sampler, steps, check_eta(eta), spacing, variance)


#: What runs when no sampler is asked for: for the LDM (``ldm``), and for a refiner by its
#: target. ``residual`` (the ``cpu-small`` refiner): DDIM with η = 1, 10 steps (the demo's
#: speed/texture trade-off), quadratic timestep spacing (steps denser toward t = 0) and
#: analytic variance (Analytic-DPM's correction, Γ per window over the generated brain
#: voxels). DPM-Solver++ measures sharper on this target but adds dark mottle in white matter
#: and speckles in the background that DDIM η = 1 does not; quadratic spacing halves the
#: white-matter noise KL at the same steps; analytic variance adds back fine texture, and Γ
#: over the whole window instead of the brain added background speckles. Measured in
#: docs/results/sampler-quality.md (on the first demo refiner, shipped at d4856b3,
#: DPM-Solver++ at 10 or 20 steps also overshot the white-matter noise: std of x − median₃
#: 0.072 / 0.070 against the original's 0.042, DDIM η = 1 0.043; 2026-11-25, commit 9fc6969).
#: ``image`` (the ``paper`` refiner, ε-prediction): DPM-Solver++(2M), 20 steps.
DEFAULT_SAMPLING: dict[str, Sampling] = {
    "ldm": Sampling("ddim", 50, 0.0),
    "residual": Sampling("ddim", 10, 1.0, "quadratic", "analytic"),
    "image": Sampling("dpm++", 20, 0.0),
}


def sampler_name(name: str) -> SamplerName:
    """The registered name for ``name`` (or one of its aliases)."""
    name = ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose {', '.join(SAMPLERS)}")
    return name  # type: ignore[return-value]


def resolve_sampling(
    default: Sampling,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    spacing: str | None = None,
    variance: str | None = None,
) -> Sampling:
    """The sampling asked for: ``default`` (a row of :data:`DEFAULT_SAMPLING`) where no
    sampler is named, with ``steps``/``eta``/``spacing``/``variance`` overriding it when
    given; with a sampler named, ``steps`` as given (``None``: that sampler's default), η 0,
    linear spacing and fixed variance unless given."""
    if sampler is None:
        return Sampling(
            default.sampler,
            default.steps if steps is None else steps,
            default.eta if eta is None else eta,
            default.spacing if spacing is None else spacing,
            default.variance if variance is None else variance,
        )
    return Sampling(
        sampler_name(sampler), steps, 0.0 if eta is None else eta, spacing or "linear",
        variance or "fixed",
    )  # fmt: skip


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    steps: int | None = None,
    eta: float = 0.0,
    clip_x0: bool = True,
    spacing: str = "linear",
    variance: str = "fixed",
) -> Sampler:
    """The sampler ``name`` over ``schedule``: ``steps`` strided steps (``None``: the default
    of :data:`SAMPLERS`) with ``spacing`` (``linear`` or ``quadratic``), DDIM's ``eta``
    (ignored by the others). ``clip_x0`` clamps each clean estimate to [−1, 1] (right for
    images and latents; a residual-target refiner needs ``False``)."""
    import importlib

    spec = SAMPLERS[sampler_name(name)]
    module, cls_name = spec.target.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    kw: dict[str, Any] = {"clip_x0": clip_x0, "spacing": spacing}
    if spec.eta:
        kw["eta"] = eta
        kw["variance"] = variance
    elif variance != "fixed":
        raise ConfigError(f"variance {variance!r} is DDIM's; {name} has none to set")
    return cls(schedule, spec.steps if steps is None else steps, **kw)


# -- help texts, generated from the tables ------------------------------------------------


def describe(s: Sampling) -> str:
    """``ddim, eta 1, 10 quadratic steps`` (η only when it is not 0, the spacing only when it
    is not linear)."""
    steps = "every training step" if s.steps is None else f"{s.steps} steps"
    if s.spacing != "linear":
        steps = steps.replace("steps", f"{s.spacing} steps")
    if s.variance != "fixed":
        steps += f", {s.variance} variance"
    return f"{s.sampler}, eta {s.eta:g}, {steps}" if s.eta else f"{s.sampler}, {steps}"


def default_steps_help() -> str:
    """``ddpm every training step, ddim 50, dpm++ 20``: each sampler's default step count."""
    return ", ".join(
        f"{name} {'every training step' if spec.steps is None else spec.steps}"
        for name, spec in SAMPLERS.items()
    )


# -- wrappers: the partial chain of --strength, a residual's bounded estimate -------------


class Truncated:
    """``sampler`` restricted to its timesteps ≤ ``t_max`` (SDEdit-style partial chain)."""

    def __init__(self, sampler: Sampler, t_max: int):
        ts = sampler.timesteps()
        self.base = sampler
        self.schedule = sampler.schedule
        self._ts = [t for t in ts if t <= t_max] or [ts[-1]]
        self.num_steps = len(self._ts)

    def timesteps(self) -> list[int]:
        return list(self._ts)

    def step(self, *args, **kw):
        return self.base.step(*args, **kw)


def truncate(sampler: Sampler, strength: float, num_train: int) -> tuple[Sampler, int | None]:
    """``(sampler, t₀)`` for ``--strength``: below 1 the chain starts at
    ``t₀ = strength·(T − 1)`` (rounded down to the sampler's next visited step) from the data
    noised to ``t₀``, instead of from pure noise at T (SDEdit); ``t₀`` is ``None`` at 1."""
    strength = check_number(strength, "strength (--strength)", 0.0, 1.0, lo_open=True)
    if strength == 1:
        return sampler, None
    short = Truncated(sampler, round(strength * (num_train - 1)))
    return short, short.timesteps()[0]


class BoundedResidual:
    """A residual refiner's clean estimate clamped to ``[lo, hi]``, chosen so that
    ``x̂ + s·r̂₀`` stays in [−1, 1].

    This is the residual form of the samplers' image clipping (which a residual cannot use:
    its range is per voxel). Without it an ε-prediction's x̂₀ at high noise, amplified by
    ``1/√ᾱ_t`` (≈ 15 at t = 999), throws multistep solvers off. ε̂ is recomputed to match.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        lo: torch.Tensor,
        hi: torch.Tensor,
        weight: torch.Tensor | None = None,
    ):
        self.denoiser, self.lo, self.hi, self.weight = denoiser, lo, hi, weight
        self.schedule = denoiser.schedule

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Prediction:
        import torch

        from realdeal.diffusion.denoiser import Prediction

        p = self.denoiser(x_t, t, cond)
        x0 = torch.minimum(torch.maximum(p.x0, self.lo), self.hi)
        ab = self.denoiser.schedule.alpha_bar(t).to(x_t).view(-1, *([1] * (x_t.ndim - 1)))
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return Prediction(x0=x0, eps=eps, weight=self.weight)
