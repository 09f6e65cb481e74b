"""Typed run configurations of every model kind and all their named presets, in one place.

Kinds: ``autoencoder``, ``ldm``, ``refiner`` and ``refiner-student`` (a refiner distilled for
few steps; the run configs below share :class:`TrainConfig`, the engine's optimisation
settings). Presets:

``paper``: the sizes of the paper (docs/method.md#spec-3 to #spec-5) (224×288×224 HCP volumes, latents 4×56×72×56, 64³ refiner
windows); the paper does not state the autoencoder's training length, so its ``steps`` is our
choice. ``cpu-small``: tiny widths that train on the 2 mm built-in cohort (≈96×112×96, latents
24×28×24) in minutes on two CPU cores. :data:`QUICK_OVERRIDES` shrinks ``cpu-small`` further to
a few seconds of training (``realdeal demo --quick`` and the tests).

Resolution order everywhere: preset → ``--config`` file → individual command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from realdeal.config import (
    BATCH,
    LOADER_WORKERS,
    SEED,
    STEPS,
    UNIT,
    Range,
    check_ranges,
    device_problem,
    from_dict,
    to_dict,
)
from realdeal.diffusion.schedule import ScheduleConfig
from realdeal.errors import ConfigError
from realdeal.inference.masks import MaskConfig
from realdeal.models.autoencoder import AutoencoderConfig
from realdeal.models.unet import UNetConfig
from realdeal.runtime.device import Precision

KINDS = ("autoencoder", "ldm", "refiner", "refiner-student")
PRESETS = ("paper", "cpu-small")
Positions = Literal["uniform", "stratified"]
Target = Literal["image", "residual"]


def _ranged(default: Any, rng: Range) -> Any:
    """A field with its declared range (:func:`realdeal.config.check_ranges`, the flags)."""
    return dataclasses.field(default=default, metadata={"range": rng})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all models.

    ``batch_size`` is the *global* number of samples per optimizer step; each of
    ``world_size`` processes computes ``batch_size / (world_size * grad_accum)`` samples per
    micro-batch. ``lr`` is reached after ``warmup_steps`` linear warm-up steps and then kept
    constant (``lr_decay="constant"``, so a run's length can change on resume) or decayed
    along a half cosine to ``min_lr_ratio·lr`` at ``steps`` (``"cosine"``: better weights
    from a short run; resuming with other ``steps`` changes the rest of the curve). ``precision="auto"``: bf16 autocast
    where the device supports it (CUDA with bf16, CPUs with native bf16), fp16 + grad scaler
    on older GPUs, else fp32.
    """

    steps: int = _ranged(1000, STEPS)
    batch_size: int = _ranged(4, BATCH)
    grad_accum: int = _ranged(1, BATCH)
    lr: float = _ranged(1e-3, Range(0.0, 1.0, lo_open=True))
    weight_decay: float = _ranged(1e-5, Range(0.0, 10.0))
    betas: tuple[float, float] = _ranged((0.9, 0.999), Range(0.0, 1.0, hi_open=True))
    warmup_steps: int = _ranged(0, Range(0, 10**9))
    lr_decay: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = _ranged(0.0, UNIT)
    grad_clip: float | None = _ranged(1.0, Range(0.0, 1e6, why="0 = off"))
    ema_decay: float = _ranged(0.999, UNIT)
    precision: Precision = "auto"
    log_every: int = _ranged(10, STEPS)
    checkpoint_every: int = _ranged(500, STEPS)
    snapshot_every: int = _ranged(0, Range(0, 10**9, why="0 = none"))
    """Also keep the EMA weights of every N-th step as ``snapshots/step-N.pt`` (slim, loadable
    like an exported model), to pick a checkpoint from curves on held-out data; 0: none."""
    seed: int = _ranged(0, SEED)
    num_workers: int = _ranged(0, LOADER_WORKERS)
    device: str = "auto"
    channels_last: bool = False
    """Run 3D convolutions in channels-last memory layout (about 2× faster on CPU oneDNN)."""
    init_from: str | None = None
    """Start a new run from the weights of this checkpoint of the same kind and network (its
    EMA weights where it has them: a training run's ``checkpoint.pt`` or a slim export such as a
    shipped demo checkpoint), with a fresh optimizer, schedule and EMA. Ignored on resume."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if device_problem(self.device):
            raise ConfigError(f"TrainConfig.device: {device_problem(self.device)}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("steps, batch_size and grad_accum must be at least 1")
        if self.snapshot_every < 0:
            raise ConfigError(f"snapshot_every must not be negative, got {self.snapshot_every}")
        if self.lr_decay not in ("constant", "cosine"):
            raise ConfigError(f"lr_decay must be constant or cosine, got {self.lr_decay!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (1-based)."""
        lr = self.lr * min(1.0, step / self.warmup_steps) if self.warmup_steps else self.lr
        if self.lr_decay == "cosine" and step > self.warmup_steps:
            span = max(1, self.steps - self.warmup_steps)
            p = min(1.0, (step - self.warmup_steps) / span)
            lr *= self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        return lr


@dataclasses.dataclass(frozen=True)
class AutoencoderRunConfig:
    """Everything ``realdeal train autoencoder`` needs.

    ``crop``: train on random crops of this size (voxels, divisible by 4) instead of whole
    volumes (the official code uses whole volumes). ``cache_volumes`` keeps the training
    volumes in memory.
    """

    preset: str = "paper"
    model: AutoencoderConfig = dataclasses.field(default_factory=AutoencoderConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=50_000,
            batch_size=4,
            lr=1e-3,
            weight_decay=1e-5,
            checkpoint_every=1000,
            log_every=50,
        )
    )
    loss: Literal["mse", "l1"] = "mse"
    crop: tuple[int, int, int] | None = _ranged(None, Range(4, 4096))
    cache_volumes: bool = False

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.crop is not None and any(c % self.model.downsampling or c < 4 for c in self.crop):
            raise ConfigError(
                f"crop {self.crop} must be positive multiples of {self.model.downsampling}"
            )


@dataclasses.dataclass(frozen=True)
class LDMRunConfig:
    """Everything ``realdeal train ldm`` needs (750 epochs of 890 subjects at batch 4 = 166,875 steps)."""

    preset: str = "paper"
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=166_875,
            batch_size=4,
            lr=2.5e-5,
            weight_decay=0.0,
            checkpoint_every=2000,
            log_every=50,
        )
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        _check_betas(self.schedule)


def _check_betas(schedule: ScheduleConfig) -> None:
    if not schedule.beta_start < schedule.beta_end:
        raise ConfigError(
            f"schedule.beta_start ({schedule.beta_start:g}) must be below beta_end "
            f"({schedule.beta_end:g})"
        )


@dataclasses.dataclass(frozen=True)
class RefinerRunConfig:
    """Everything ``realdeal train refiner`` needs. Defaults: the paper (docs/method.md#spec-5).

    2,700 epochs of 890 subjects at batch 32, one patch per subject per epoch ≈ 75,000 steps.
    ``coarse``: the derived-volume kind the coarse inputs come from (``reconstructions``).
    """

    preset: str = "paper"
    window: int = _ranged(64, Range(4, 1024))
    unet: UNetConfig = dataclasses.field(
        default_factory=lambda: UNetConfig(
            in_channels=3,
            out_channels=1,
            channels=(128, 256, 256),
            num_res_blocks=2,
            attention_levels=(False, False, True),
            num_head_channels=(0, 0, 256),
        )
    )
    schedule: ScheduleConfig = dataclasses.field(
        default_factory=lambda: ScheduleConfig(
            schedule="scaled_linear_beta", prediction_type="epsilon"
        )
    )
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=75_000, batch_size=32, lr=1e-5, weight_decay=0.0, checkpoint_every=1000
        )
    )
    masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    positions: Positions = "stratified"
    coarse: str = "reconstructions"
    target: Target = "image"
    """``image`` (the paper) or ``residual`` (diffuse ``(x − x̂)/residual_scale``)."""
    residual_scale: float | None = _ranged(None, Range(0.0, 1e6, lo_open=True))
    """Residual normalisation; ``None`` = measured on the training set before training."""

    def __post_init__(self) -> None:
        check_ranges(self)
        _check_betas(self.schedule)
        if self.unet.in_channels != 3 or self.unet.out_channels != 1:
            raise ConfigError("the refiner U-Net takes [x_t, x̂, y_prev] (3 channels) and outputs 1")
        if self.target not in ("image", "residual"):
            raise ConfigError(f"refiner target must be image or residual, got {self.target!r}")
        if self.residual_scale is not None and not self.residual_scale > 0:
            raise ConfigError(f"residual_scale must be positive, got {self.residual_scale}")
        if self.window % self.unet.size_multiple:
            raise ConfigError(
                f"window {self.window} must be divisible by {self.unet.size_multiple} for this U-Net"
            )


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation of a refiner for few steps (Salimans & Ho 2022; docs/refinement.md).

    Round ``k`` (1-based) trains a student to take in one deterministic DDIM step what its
    teacher takes in two, on the halving time grid of ``start_steps / 2^k`` steps; the first
    round's teacher is the given checkpoint, each later round's the student of the round
    before. The student starts from the teacher's weights.
    """

    start_steps: int = _ranged(16, Range(2, 4096))
    """Steps the teacher runs in the first round; every round halves them."""
    rounds: int = _ranged(4, Range(1, 12))
    """Rounds of halving: the final student runs ``start_steps / 2^rounds`` steps."""
    steps_per_round: int = _ranged(2000, STEPS)
    """Optimizer steps of each round (the run's ``train.steps`` is ``rounds`` times this)."""
    spacing: Literal["linear", "quadratic"] = "linear"
    """Spacing of the halving time grid: linear, or quadratic (denser toward t = 0)."""
    weighting: Literal["snr+1", "truncated-snr"] = "snr+1"
    """Loss weight w(t) on the squared error of the clean estimate: snr+1 (1 + SNR, the
    v-prediction MSE) or truncated-snr (max(SNR, 1))."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.start_steps % 2**self.rounds:
            chain = [self.start_steps / 2**k for k in range(self.rounds + 1)]
            shown = " → ".join(f"{v:g}" for v in chain)
            raise ConfigError(
                f"start_steps (--start-steps) {self.start_steps} does not halve {self.rounds} "
                f"times ({shown}): give a multiple of {2**self.rounds} or fewer --rounds"
            )

    def student_steps(self, k: int) -> int:
        """Native steps of the student of round ``k`` (1-based; 0: the first teacher's)."""
        return self.start_steps // 2**k


@dataclasses.dataclass(frozen=True)
class StudentRunConfig(RefinerRunConfig):
    """Everything ``realdeal train refiner-student`` needs: the teacher's refiner fields
    (window, network, schedule, masks, positions, coarse input, target and residual scale —
    filled in from the teacher checkpoint when the run starts), ``distill`` and ``train``.
    ``train.steps`` is set to ``distill.rounds × distill.steps_per_round``; each round runs the
    learning-rate schedule of ``train`` afresh. The run's checkpoints are refiner checkpoints."""

    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.distill
        if self.train.steps != d.rounds * d.steps_per_round:
            steps = d.rounds * d.steps_per_round
            object.__setattr__(self, "train", dataclasses.replace(self.train, steps=steps))
        from realdeal.diffusion.samplers import halving_timesteps

        halving_timesteps(self.schedule.num_train_timesteps, d.start_steps, d.spacing)


def _cpu_small_train(steps: int, lr: float, warmup_steps: int, weight_decay: float = 0.0):
    """``cpu-small`` optimisation: batch 4, cosine decay, bf16 where native, EMA 0.99."""
    return TrainConfig(
        steps=steps,
        batch_size=4,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        lr_decay="cosine",
        precision="auto",
        checkpoint_every=100,
        log_every=10,
        ema_decay=0.99,
        channels_last=True,
    )


def _cpu_small_unet(channels: tuple[int, int, int], **io: int) -> UNetConfig:
    """``cpu-small`` U-Net: one block per level, attention (one head) at the deepest only."""
    return UNetConfig(
        channels=channels,
        num_res_blocks=1,
        attention_levels=(False, False, True),
        num_head_channels=(0, 0, channels[-1]),
        norm_num_groups=8,
        **io,
    )


_PRESETS = {
    ("autoencoder", "paper"): AutoencoderRunConfig(),
    ("autoencoder", "cpu-small"): AutoencoderRunConfig(
        preset="cpu-small",
        model=AutoencoderConfig(channels=(8, 16, 16), bottleneck=8),
        train=_cpu_small_train(1200, lr=1e-2, warmup_steps=20, weight_decay=1e-5),
        crop=(32, 32, 32),
        cache_volumes=True,
    ),
    ("ldm", "paper"): LDMRunConfig(),
    ("ldm", "cpu-small"): LDMRunConfig(
        preset="cpu-small",
        unet=_cpu_small_unet((16, 32, 64)),
        # 500 steps at lr 4e-3 keep `train autoencoder → reconstruct → train ldm → sample` within
        # 15 min on 2 cores (843 s measured; 957 s with the earlier 600 steps at 1e-3). On the
        # demo cohort the two denoise training latents about equally well (x̂0 MSE within ±15%:
        # lower at t ≤ 400, higher at t ≥ 600); 200-step probes: lr 4e-3 beat 1e-3 and 1e-2 at
        # every t ≥ 50.
        train=_cpu_small_train(500, lr=4e-3, warmup_steps=30),
    ),
    ("refiner", "paper"): RefinerRunConfig(),
    ("refiner", "cpu-small"): RefinerRunConfig(
        preset="cpu-small",
        window=32,
        unet=_cpu_small_unet((16, 32, 32), in_channels=3, out_channels=1),
        train=_cpu_small_train(800, lr=1e-3, warmup_steps=20),
        schedule=ScheduleConfig(schedule="scaled_linear_beta", prediction_type="v_prediction"),
        target="residual",
    ),
}


def _student(name: str, distill: DistillConfig, train: TrainConfig) -> StudentRunConfig:
    """The ``refiner-student`` preset ``name``: its refiner fields are the ``refiner`` preset's
    (a run takes the teacher's instead)."""
    base = _PRESETS[("refiner", name)]
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(RefinerRunConfig)}
    return StudentRunConfig(**{**fields, "train": train}, distill=distill)


# ``paper``: 32 → 2 steps (the paper refiner holds its quality down to about 30 steps), 5,000
# steps a round at the refiner's batch. ``cpu-small``: the demo refiner, 16 → 1 steps, quadratic
# grid (its default sampling's spacing), 250 steps a round at batch 4 (a smoke run on a CPU),
# lr 5e-5: at 2e-4 a 100-step round lowered the loss at the two lowest-noise steps and raised it
# up to 5× at the others (training-runs/refiner-student/README.md).
_PRESETS[("refiner-student", "paper")] = _student(
    "paper",
    DistillConfig(start_steps=32, rounds=4, steps_per_round=5000),
    TrainConfig(
        steps=20_000,
        batch_size=32,
        lr=5e-5,
        weight_decay=0.0,
        warmup_steps=100,
        checkpoint_every=1000,
        log_every=50,
    ),  # fmt: skip
)
_PRESETS[("refiner-student", "cpu-small")] = _student(
    "cpu-small",
    DistillConfig(start_steps=16, rounds=4, steps_per_round=250, spacing="quadratic"),
    dataclasses.replace(_cpu_small_train(1000, lr=5e-5, warmup_steps=10), checkpoint_every=50),
)


# The demo's ``--quick`` mode (and the tests): ``cpu-small`` trained for a few steps on 4 mm
# volumes. Overrides on top of a ``cpu-small`` config; the run keeps ``preset="cpu-small"``.
_QUICK_TRAIN = {"steps": 6, "checkpoint_every": 6, "log_every": 2, "warmup_steps": 2}
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "autoencoder": {"train": _QUICK_TRAIN, "crop": [16, 16, 16]},
    "ldm": {"train": _QUICK_TRAIN},
    "refiner": {"train": {**_QUICK_TRAIN, "batch_size": 2}, "window": 16},
    "refiner-student": {
        "train": {**_QUICK_TRAIN, "batch_size": 2},
        "distill": {"start_steps": 4, "rounds": 2, "steps_per_round": 3},
    },
}


def preset(kind: Literal["autoencoder", "ldm", "refiner", "refiner-student"], name: str):
    """The run config of ``kind`` for preset ``name`` (``paper`` or ``cpu-small``)."""
    try:
        return _PRESETS[(kind, name)]
    except KeyError:
        if kind not in KINDS:
            raise ConfigError(
                f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}"
            ) from None
        raise ConfigError(
            f"unknown {kind} preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


class _Clear:
    """Type of :data:`CLEAR`."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR = _Clear()
"""An override value that sets an optional field to ``None`` (``None`` itself means "unset")."""


def with_overrides(cfg, overrides: dict):
    """``cfg`` with nested overrides ``{"train": {"lr": 1e-4}, "loss": "l1"}``.

    ``None`` values are unset (left as in ``cfg``); :data:`CLEAR` sets a field to ``None``.
    """

    def prune(d):
        return {
            k: (prune(v) if isinstance(v, dict) else v)
            for k, v in d.items()
            if v is not None and v != {}
        }

    def merge(base: dict, new: dict) -> dict:
        out = dict(base)
        for k, v in new.items():
            out[k] = (
                merge(base[k], v)
                if isinstance(v, dict) and isinstance(base.get(k), dict)
                else None
                if v is CLEAR
                else v
            )
        return out

    changes = prune(overrides)
    return from_dict(type(cfg), merge(to_dict(cfg), changes)) if changes else cfg
