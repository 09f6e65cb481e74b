"""The sampler registry: every sampler by name, and the one table of sampling defaults.

``ddpm``, ``ddim``, ``dpm++`` and ``distilled`` (:mod:`realdeal.diffusion.samplers`,
:mod:`realdeal.diffusion.dpm_solver`) are made by :func:`make_sampler` for the LDM and the
refiner alike; ``distilled`` is the deterministic DDIM a progressively distilled student runs
on its halving time grid. :data:`SAMPLERS` gives each sampler's default step count and
:data:`DEFAULT_SAMPLING` what each model runs when no sampler is asked for; the Python API,
``DemoConfig`` and the command-line help all read these two tables. The ``--strength``
truncation (:func:`truncate`) and a residual refiner's bounded clean estimate
(:class:`BoundedResidual`) live here too, as wrappers around a sampler and a denoiser.

This module imports torch only when a sampler is made, so that the command line can build
its help text from the tables without loading torch.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from realdeal.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from realdeal.diffusion.denoiser import Denoiser, Prediction
    from realdeal.diffusion.samplers import Sampler
    from realdeal.diffusion.schedule import NoiseSchedule

SamplerName = Literal["ddpm", "ddim", "dpm++", "distilled"]


class SamplerSpec(NamedTuple):
    """A registered sampler: its class (``module:name``), default step count (``None``: every
    training step), whether it takes DDIM's η, and whether its steps never draw noise
    (``deterministic``; a sampler that takes η draws noise unless η = 0 and its variance is
    fixed)."""

    target: str
    steps: int | None
    eta: bool
    summary: str
    deterministic: bool = False


#: Every sampler by name.
SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("realdeal.diffusion.samplers:DDPMSampler", None, False, "ancestral DDPM"),
    "ddim": SamplerSpec("realdeal.diffusion.samplers:DDIMSampler", 50, True, "DDIM"),
    "dpm++": SamplerSpec(
        "realdeal.diffusion.dpm_solver:DPMSolverPP2M", 20, False, "DPM-Solver++(2M)", True
    ),
    "distilled": SamplerSpec(
        "realdeal.diffusion.samplers:DistilledSampler",
        4,
        False,
        "deterministic DDIM on a distilled student's halving grid",
        True,
    ),  # fmt: skip
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
#: ``image`` (the ``paper`` refiner, ε-prediction): DPM-Solver++(2M), 20 steps. A distilled
#: student (:mod:`realdeal.training.distill`) instead runs ``distilled`` at the step count and
#: spacing its checkpoint records (:class:`~realdeal.pipelines.refiner.RefinerPipeline`).
DEFAULT_SAMPLING: dict[str, Sampling] = {
    "ldm": Sampling("ddim", 50, 0.0),
    "residual": Sampling("ddim", 10, 1.0, "quadratic", "analytic"),
    "image": Sampling("dpm++", 20, 0.0),
}


def draws_noise(name: str, eta: float = 0.0, variance: str = "fixed") -> bool:
    """Whether sampler ``name`` draws noise in its steps (beyond a chain's start noise) with
    DDIM's ``eta`` and ``variance`` (ignored by samplers that take no η)."""
    spec = SAMPLERS[sampler_name(name)]
    if spec.deterministic:
        return False
    return not spec.eta or eta > 0 or variance != "fixed"


def sampler_name(name: str) -> SamplerName:
    """The registered name for ``name`` (or one of its aliases)."""
    name = ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose {', '.join(SAMPLERS)}")
    return name  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample, shared by :class:`~realdeal.pipelines.ldm.LatentDiffusionPipeline` and
    :class:`~realdeal.pipelines.refiner.RefineSettings` (which extends it).

    Every field left ``None`` takes the model's row of :data:`DEFAULT_SAMPLING`
    (:meth:`resolve`). ``sampler`` is a registered name (:data:`SAMPLERS`, or an alias) or a
    ready sampler object (anything with the :class:`~realdeal.diffusion.samplers.Sampler`
    interface, e.g. ``DDIMSampler(schedule, 25)``), which is used as it is; it then carries
    its own steps and η, so the other fields must stay ``None``. Settings are checked where
    they are made: η finite in :data:`ETA_RANGE`, steps a whole number ≥ 1, spacing in
    :data:`SPACINGS`, variance in :data:`VARIANCES`, each refused in one line naming its flag.
    """

    sampler: Any = None
    """``ddpm``, ``ddim``, ``dpm++`` or ``distilled`` (or a sampler object); ``None``: as
    :data:`~realdeal.diffusion.registry.DEFAULT_SAMPLING` says for the model (by the refiner's
    target, or ``ldm``)."""
    steps: int | None = None
    """Reverse steps; ``None``: the sampler's default (``SAMPLERS`` in
    :mod:`realdeal.diffusion.registry`), or as ``DEFAULT_SAMPLING`` says when ``sampler`` is
    ``None``."""
    eta: float | None = None
    """DDIM η; ``None``: 0, or as ``DEFAULT_SAMPLING`` says when ``sampler`` is ``None``."""
    variance: str | None = None
    """DDIM's step variance, ``fixed`` or ``analytic`` (adds what x̂₀'s uncertainty leaves out;
    :class:`~realdeal.diffusion.samplers.DDIMSampler`); ``None``: fixed, or as
    ``DEFAULT_SAMPLING`` says when ``sampler`` is ``None`` (analytic for a residual refiner)."""
    spacing: str | None = None
    """Timestep spacing, ``linear`` or ``quadratic`` (denser toward t = 0); ``None``: linear,
    or as ``DEFAULT_SAMPLING`` says when ``sampler`` is ``None`` (quadratic for a residual
    refiner)."""

    def __post_init__(self) -> None:
        import numbers

        if isinstance(self.sampler, str):
            object.__setattr__(self, "sampler", sampler_name(self.sampler))
        elif self.sampler is not None:
            if not callable(getattr(self.sampler, "step", None)) or not callable(
                getattr(self.sampler, "timesteps", None)
            ):
                raise ConfigError(
                    f"sampler must be a name ({', '.join(SAMPLERS)}) or a sampler object "
                    f"(with timesteps() and step()), got {self.sampler!r}"
                )
            given = [f for f in ("steps", "eta", "variance", "spacing") if getattr(self, f)]
            if given:
                raise ConfigError(
                    f"a sampler object carries its own settings; leave {', '.join(given)} unset"
                )
        if self.eta is not None:
            object.__setattr__(self, "eta", check_eta(self.eta))
        if self.steps is not None and (
            isinstance(self.steps, bool)
            or not isinstance(self.steps, numbers.Integral)
            or self.steps < 1
        ):
            raise ConfigError(
                f"steps (--steps) must be an integer of at least 1, got {self.steps!r}"
            )
        for name, allowed in (("spacing", SPACINGS), ("variance", VARIANCES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ConfigError(
                    f"{name} (--{name}) must be one of {', '.join(allowed)}, got {value!r}"
                )

    @classmethod
    def of(cls, sampling: SamplingConfig | str | Sampler | None) -> SamplingConfig:
        """``sampling`` as a :class:`SamplingConfig`: ``None`` is the model's default, a name
        or a sampler object is that sampler."""
        if isinstance(sampling, SamplingConfig):
            return sampling
        return cls() if sampling is None else cls(sampler=sampling)

    @property
    def is_object(self) -> bool:
        """Whether ``sampler`` is a ready sampler object (not a name)."""
        return self.sampler is not None and not isinstance(self.sampler, str)

    def resolve(self, default: Sampling) -> Sampling:
        """The sampling asked for: ``default`` (a row of :data:`DEFAULT_SAMPLING`) where no
        sampler is named, with ``steps``/``eta``/``spacing``/``variance`` overriding it when
        given; with a sampler named, ``steps`` as given (``None``: that sampler's default), η
        0, linear spacing and fixed variance unless given. A sampler object is described by
        its class name and step count."""
        if self.is_object:
            smp = self.sampler
            return Sampling.__new__(
                Sampling, type(smp).__name__, int(smp.num_steps), float(getattr(smp, "eta", 0.0))
            )
        if self.sampler is None:
            return Sampling(
                default.sampler,
                default.steps if self.steps is None else self.steps,
                default.eta if self.eta is None else self.eta,
                default.spacing if self.spacing is None else self.spacing,
                default.variance if self.variance is None else self.variance,
            )
        return Sampling(
            self.sampler, self.steps, 0.0 if self.eta is None else self.eta,
            self.spacing or "linear", self.variance or "fixed",
        )  # fmt: skip

    def make(self, schedule: NoiseSchedule, default: Sampling, clip_x0: bool = True) -> Sampler:
        """The sampler to run: the given object, or :func:`make_sampler` of :meth:`resolve`."""
        if self.is_object:
            return self.sampler
        s = self.resolve(default)
        return make_sampler(
            s.sampler, schedule, s.steps, s.eta, clip_x0=clip_x0, spacing=s.spacing,
            variance=s.variance,
        )  # fmt: skip


def sampling_fields(settings: Any) -> SamplingConfig:
    """The :class:`SamplingConfig` part of ``settings`` (a ``SamplingConfig`` or a dataclass
    that extends it, such as ``RefineSettings``)."""
    return SamplingConfig(
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(SamplingConfig)}
    )


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
