"""Progressive distillation of a refiner for few-step refinement (Salimans & Ho 2022).

"Progressive Distillation for Fast Sampling of Diffusion Models" (Salimans & Ho, ICLR 2022)
adapted to the refiner's masked windows. A training example is built exactly as refiner
training builds it (:class:`~realdeal.training.refiner.PatchPairs`: window, coarse ``x̂``, mask
``M``; :func:`~realdeal.inference.conditioning.training_inputs`: the clean known region and
``y_prev``; for a residual teacher every image quantity is the residual ``(x − x̂)/s`` with
the teacher's ``s``). On the student's halving grid of ``N`` steps
(:func:`~realdeal.diffusion.samplers.halving_timesteps`, ``t₀ > … > t_{N−1}``, then −1), with
``t = t_i``, ``t'`` the teacher's grid point between and ``t'' = t_{i+1}``:

* ``z_t = √ᾱ_t x + √(1−ᾱ_t) ε`` where ``M = 1``, ``x`` elsewhere (the refiner's ``x_t``);
* the **teacher** takes two deterministic DDIM steps ``z_t → z_{t'} → z_{t''}`` on the grid of
  ``2N`` steps, as inference runs it (:class:`~realdeal.diffusion.samplers.DistilledSampler`,
  the residual refiner's bounded clean estimate, the known region reset after each step); no
  gradient;
* the **student**'s target is the clean estimate with which one DDIM step from ``z_t`` lands
  on ``z_{t''}``: with ``α = √ᾱ``, ``σ = √(1−ᾱ)``,
  ``x̃ = (z_{t''} − (σ_{t''}/σ_t)·z_t) / (α_{t''} − (σ_{t''}/σ_t)·α_t)``
  (:func:`distillation_target`; at ``t'' = −1`` it is the teacher's final ``z``);
* loss ``w(t)·‖x̃ − x̂_θ(z_t)‖²`` over the generated (``M = 1``) voxels, in x space, with the
  paper's weights: ``snr+1`` ``w = 1 + SNR_t`` (equal to ``‖ṽ − v̂‖²``, the v-prediction MSE the
  refiner was trained with) or ``truncated-snr`` ``w = max(SNR_t, 1)``.

One **round** trains the student for ``steps_per_round`` steps, halving ``2N → N``; the next
round's teacher is this student's EMA weights (saved as ``RUN/rounds/round-K.pt``), while the
student trains on from its own weights, optimizer state and EMA (the paper restarts it from
the teacher's weights). The first round's student starts from the teacher's EMA weights
(``train.init_from``). Each round is one :func:`~realdeal.training.engine.train` call up to
its last step, so a killed run resumes exactly inside any round, its teacher read back from
the round file. Checkpoints are refiner checkpoints carrying a
:class:`~realdeal.runtime.checkpoint.Distillation` record (teacher sha256, rounds, native steps
and time grid), which :class:`~realdeal.pipelines.refiner.RefinerPipeline` samples with the
``distilled`` sampler by default.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch
from torch import nn

from realdeal.config import from_dict, save_config, to_dict
from realdeal.diffusion.denoiser import Denoiser, Prediction
from realdeal.diffusion.registry import BoundedResidual
from realdeal.diffusion.samplers import DistilledSampler, halving_timesteps
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError, InputError
from realdeal.inference.conditioning import keep_known, training_inputs
from realdeal.models.loading import load_refiner
from realdeal.models.unet import UNetConfig, build_unet
from realdeal.presets import RefinerRunConfig, StudentRunConfig, TrainConfig
from realdeal.runtime.checkpoint import (
    Distillation,
    RefinerCheckpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from realdeal.runtime.rng import batch_draws, sample_randint, seed_everything
from realdeal.training.distributed import barrier, init_distributed
from realdeal.training.engine import TrainResult, train
from realdeal.training.refiner import PatchPairs, RefinerTask, patch_pairs, training_ids
from realdeal.training.run_folder import CHECKPOINT_NAME, CONFIG_NAME, dataset_fingerprint, open_run
from realdeal.utils.fs import sha256_file

log = logging.getLogger(__name__)

ROUNDS_DIR = "rounds"


def round_checkpoint(out_dir: str | Path, k: int) -> Path:
    """Where a run keeps the student of round ``k`` (1-based): ``RUN/rounds/round-K.pt``."""
    return Path(out_dir) / ROUNDS_DIR / f"round-{k}.pt"


def _column(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` → ``(B, 1, 1, …)`` in ``like``'s dtype and device."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def distillation_target(
    schedule: NoiseSchedule,
    z_t: torch.Tensor,
    z_end: torch.Tensor,
    t: torch.Tensor,
    t_end: torch.Tensor,
) -> torch.Tensor:
    """The clean estimate ``x̃`` with which one deterministic DDIM step from ``z_t`` (at ``t``)
    lands on ``z_end`` (at ``t_end``, −1 = clean):
    ``x̃ = (z_end − (σ_e/σ_t)·z_t) / (α_e − (σ_e/σ_t)·α_t)``. Tensors ``(B, C, …)``, ``t`` and
    ``t_end`` ``(B,)``; the coefficients are computed in float64."""
    ab_t, ab_e = schedule.alpha_bar(t), schedule.alpha_bar(t_end)
    ratio = ((1 - ab_e) / (1 - ab_t)).sqrt()
    denom = ab_e.sqrt() - ratio * ab_t.sqrt()
    return (z_end - _column(ratio, z_t) * z_t) / _column(denom, z_t)


class StudentDraws:
    """One sample's random draws for distillation: the refiner's known-region noise ``g`` and
    diffusion noise ``ε`` (:meth:`RefinerTask.draws`, the same numbers) and the index ``i`` of
    the student's grid step, all from the sample's seed. A small object of its own, so that
    data-loading workers get it without the teacher network."""

    def __init__(self, refiner: RefinerTask, steps: int):
        self.refiner, self.steps = refiner, steps

    def __call__(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d = self.refiner.draws(item)
        return {"g": d["g"], "eps": d["eps"], "i": sample_randint(self.steps, item["seed"], 14)}


class DistillTask(RefinerTask):
    """The distillation loss of one round: a student of ``steps`` steps learns two steps of
    ``teacher`` (a network of the same kind) on the halving grid (see the module docstring)."""

    DRAWN = ("g", "eps", "i")

    def __init__(
        self,
        schedule: NoiseSchedule,
        teacher: nn.Module,
        steps: int,
        spacing: str = "linear",
        weighting: str = "snr+1",
        target: str = "image",
        residual_scale: float = 1.0,
    ):
        super().__init__(schedule, target, residual_scale)  # type: ignore[arg-type]
        if weighting not in ("snr+1", "truncated-snr"):
            raise ConfigError(f"weighting must be snr+1 or truncated-snr, got {weighting!r}")
        self.teacher, self.steps, self.weighting = (
            teacher.eval().requires_grad_(False),
            steps,
            weighting,
        )
        self.sampler = DistilledSampler(
            schedule, 2 * steps, clip_x0=target == "image", spacing=spacing
        )
        grid = halving_timesteps(schedule.num_train_timesteps, steps, spacing)
        teacher_grid = self.sampler.timesteps()
        if teacher_grid[::2] != grid:  # cannot happen: halving_timesteps nests by construction
            raise ConfigError(f"the {2 * steps}-step grid does not nest the {steps}-step one")
        self.teacher_grid = torch.tensor([*teacher_grid, -1])
        self.draws = StudentDraws(RefinerTask(schedule, target, residual_scale), steps)  # type: ignore[arg-type]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, xhat = batch["x"], batch["xhat"]
        if self.target == "residual":
            x = (x - xhat) / self.residual_scale
        m = batch["mask"].to(x.dtype)
        d = batch_draws(self, batch)
        g, eps, i = d["g"].to(x), d["eps"].to(x), d["i"].cpu()
        t, t_end = self.teacher_grid[2 * i], self.teacher_grid[2 * i + 2]
        x_t, cond = training_inputs(x, xhat, m, g, self.schedule.add_noise(x, eps, t))
        z_end = self.teacher_steps(x_t, cond, x, xhat, m, i)
        x_target = distillation_target(self.schedule, x_t, z_end, t, t_end)
        x0 = Denoiser(model, self.schedule)(x_t, t, cond).x0
        err = _column(self.weight(t), x0) * (x0.float() - x_target.float()) ** 2
        return (err * m).sum() / m.sum().clamp(min=1.0)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) on ``‖x̃ − x̂‖²``: ``1 + SNR_t`` (snr+1) or ``max(SNR_t, 1)`` (truncated-snr)."""
        ab = self.schedule.alpha_bar(t)
        snr = ab / (1 - ab)
        return (1 + snr if self.weighting == "snr+1" else snr.clamp(min=1.0)).float()

    @torch.no_grad()
    def teacher_steps(
        self,
        x_t: torch.Tensor,
        cond: torch.Tensor,
        known: torch.Tensor,
        xhat: torch.Tensor,
        m: torch.Tensor,
        i: torch.Tensor,
    ) -> torch.Tensor:
        """The teacher's two DDIM steps from ``x_t`` at student grid step ``i`` ``(B,)``, as
        inference takes them: the residual refiner's bounded clean estimate, the known region
        reset to ``known`` after each step. Always in fp32, outside any autocast: the target
        amplifies the teacher's errors by ``1/(α'' − (σ''/σ)·α)``: 15× from t = 999 on the
        16-step quadratic grid of the scaled-linear schedule."""
        with torch.autocast(x_t.device.type, enabled=False):
            return self._teacher_steps(x_t.float(), cond.float(), known.float(), xhat.float(),
                                       m.float(), i)  # fmt: skip

    def _teacher_steps(self, x_t, cond, known, xhat, m, i) -> torch.Tensor:
        den = Denoiser(self.teacher, self.schedule)
        if self.target == "residual":
            s = self.residual_scale
            den = BoundedResidual(den, (-1.0 - xhat) / s, (1.0 - xhat) / s)  # type: ignore[assignment]
        z = x_t
        for j in (2 * i, 2 * i + 1):
            t, t_next = self.teacher_grid[j], self.teacher_grid[j + 1]
            pred = den(z, t, cond)
            rows = [
                self.sampler.step(
                    z[b : b + 1], int(t[b]), int(t_next[b]),
                    Prediction(pred.x0[b : b + 1], pred.eps[b : b + 1]),
                )[0]
                for b in range(z.shape[0])
            ]  # fmt: skip
            z = keep_known(torch.cat(rows), known, m)
        return z


@dataclasses.dataclass(frozen=True)
class _RoundTrain(TrainConfig):
    """A run's train config whose learning-rate schedule starts afresh every ``round_steps``."""

    round_steps: int = 1

    @functools.cached_property
    def _one_round(self) -> TrainConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{**fields, "steps": self.round_steps})

    def lr_at(self, step: int) -> float:
        return self._one_round.lr_at((step - 1) % self.round_steps + 1)


def student_config(
    cfg: StudentRunConfig, teacher: RefinerCheckpoint, path: Path
) -> StudentRunConfig:
    """``cfg`` (its ``distill`` and ``train``) with the refiner fields of ``teacher`` (the
    checkpoint at ``path``, which the student starts from: ``train.init_from``)."""
    names = [f.name for f in dataclasses.fields(RefinerRunConfig)]
    try:
        run = from_dict(RefinerRunConfig, {k: v for k, v in teacher.config.items() if k in names})
        unet = from_dict(UNetConfig, teacher.model_config)
    except ConfigError as e:
        raise InputError(path, f"holds a refiner config this realdeal cannot read ({e})") from e
    if run.target == "residual" and run.residual_scale is None:
        raise InputError(path, "is a residual refiner without a residual scale")
    d = teacher.distilled
    if d is not None and (d.steps, d.spacing) != (cfg.distill.start_steps, cfg.distill.spacing):
        raise ConfigError(
            f"the teacher is a student of {d.steps} {d.spacing} steps: distil it further with "
            f"--start-steps {d.steps} --spacing {d.spacing}"
        )
    fields = {k: getattr(run, k) for k in names} | {
        "preset": cfg.preset, "window": teacher.window, "unet": unet,
        "train": dataclasses.replace(cfg.train, init_from=str(path)),
    }  # fmt: skip
    return StudentRunConfig(**fields, distill=cfg.distill)


def _record(cfg: StudentRunConfig, teacher: RefinerCheckpoint, sha: str, k: int) -> Distillation:
    """The distillation record of the student of round ``k`` (1-based) of this run."""
    d = cfg.distill
    steps = d.student_steps(k)
    grid = halving_timesteps(cfg.schedule.num_train_timesteps, steps, d.spacing)
    base = teacher.distilled.rounds if teacher.distilled is not None else 0
    return Distillation(teacher_sha256=sha, teacher_steps=d.start_steps, rounds=base + k,
                        steps=steps, spacing=d.spacing, timesteps=tuple(grid))  # fmt: skip


def train_student(
    cfg: StudentRunConfig,
    teacher: str | Path,
    data: str | Path,
    out_dir: str | Path,
    resume: bool = False,
) -> TrainResult:
    """Distil the refiner ``teacher`` (a checkpoint path or ``demo:refiner``) into a student of
    ``start_steps / 2^rounds`` steps on the train split of the prepared dataset ``data``
    (with reconstructions), writing the run into ``out_dir``. ``cfg`` gives ``distill`` and
    ``train`` (a ``refiner-student`` preset, a config file, flags); its refiner fields are
    replaced by the teacher's. With ``resume`` the run continues from its last checkpoint."""
    from realdeal.data.dataset import PreparedDataset

    path = resolve_checkpoint(teacher)
    ckpt = load_checkpoint(path, kind="refiner")
    assert isinstance(ckpt, RefinerCheckpoint)
    cfg = student_config(cfg, ckpt, path)
    ds = PreparedDataset(data)
    ids = _training_ids(ds, cfg, ckpt)
    dist = init_distributed(cfg.train.device)
    same = {"image_shape": list(ds.shape), "window": cfg.window}
    sha = sha256_file(path)
    inputs = {"dataset": dataset_fingerprint(ds), "teacher": sha}
    with open_run(out_dir, "refiner", cfg, resume=resume, dist=dist, same=same,
                  inputs=inputs) as state:  # fmt: skip
        if dist.is_main:
            save_config(cfg, Path(out_dir) / CONFIG_NAME)
        dataset = patch_pairs(cfg, ds, ids, Path(out_dir), dist)
        extra = {
            "window": cfg.window, "image_shape": list(ds.shape), "spacing": list(ds.spacing),
            "scaler": ds.scaler.to_dict(), "dataset": str(ds.root),
        }  # fmt: skip
        records = [_record(cfg, ckpt, sha, k) for k in range(1, cfg.distill.rounds + 1)]
        return _train_rounds(cfg, path, dataset, Path(out_dir), resume, state.step or 0,
                             extra, records, dist)  # fmt: skip


def _training_ids(ds, cfg: StudentRunConfig, teacher: RefinerCheckpoint) -> list[str]:
    """The train split of ``ds``, refused in one line if it cannot serve the teacher."""
    import numpy as np

    ids = training_ids(ds, cfg)
    if teacher.spacing and not np.allclose(ds.spacing, teacher.spacing, atol=1e-3):
        raise InputError(
            ds.root,
            f"voxel size {tuple(ds.spacing)} mm differs from the teacher's training data "
            f"{tuple(teacher.spacing)}",
        )
    return ids


def _train_rounds(
    cfg: StudentRunConfig,
    teacher: Path,
    dataset: PatchPairs,
    out_dir: Path,
    resume: bool,
    done: int,
    extra: dict,
    records: list[Distillation],
    dist,
) -> TrainResult:
    """Rounds ``done // steps_per_round + 1`` … ``rounds``, each one engine call up to its last
    step; after each, its student (the checkpoint's EMA weights) is saved as the next teacher."""
    d, schedule = cfg.distill, NoiseSchedule(cfg.schedule)
    per = d.steps_per_round
    first = min(done // per, d.rounds - 1)  # 0-based round the run continues in
    fields = {f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(TrainConfig)}
    res: TrainResult | None = None
    for r in range(first, d.rounds):
        source = teacher if r == 0 else _round_file(out_dir, r, per, dist)
        net = load_refiner(source, dist.device).unet
        if cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        log.info("round %d of %d: the teacher's %d steps → %d student steps (teacher %s)",
                 r + 1, d.rounds, d.student_steps(r), d.student_steps(r + 1), source)  # fmt: skip
        task = DistillTask(schedule, net, d.student_steps(r + 1), d.spacing, d.weighting,
                           cfg.target, cfg.residual_scale or 1.0)  # fmt: skip
        seed_everything(cfg.train.seed)
        res = train(
            task, build_unet(cfg.unet), dataset,
            _RoundTrain(**{**fields, "steps": (r + 1) * per}, round_steps=per), out_dir,
            run_config=to_dict(cfg), model_config=to_dict(cfg.unet), preset=cfg.preset,
            resume=resume or r > first, extra={**extra, "distilled": records[r]}, dist=dist,
        )  # fmt: skip
        if res.stopped_by:
            return res
        _round_file(out_dir, r + 1, per, dist)
    assert res is not None
    return res


def _round_file(out_dir: Path, k: int, per: int, dist) -> Path:
    """``RUN/rounds/round-K.pt``, written (rank 0) from the run's checkpoint at the end of
    round ``k`` if it is not there yet: the student of round ``k``, slim."""
    path = round_checkpoint(out_dir, k)
    if dist.is_main and not path.is_file():
        ckpt = load_checkpoint(out_dir / CHECKPOINT_NAME, kind="refiner")
        if ckpt.step != k * per:
            raise InputError(
                path,
                f"is missing and the run's checkpoint is at step {ckpt.step}, not at the end of "
                f"round {k} (step {k * per}): the teacher of round {k + 1} is lost; start a new "
                "run from the last student you have",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, ckpt.slimmed())
    barrier(dist)
    return path
