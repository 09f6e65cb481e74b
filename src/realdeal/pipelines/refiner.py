"""Refine whole NIfTI volumes with a trained refiner: checkpoint + plan + sampler + I/O.

:class:`RefinerPipeline` loads a refiner checkpoint and refines any coarse volume:
an autoencoder reconstruction, an LDM sample, or another generator's output, of any shape.
Intensities and brain: :func:`realdeal.data.intensity.scan_to_model_space` (inputs already in
[−1, 1] are used as they are; raw scans are mapped with the training set's stored pair when it
fits, else with their own brain percentiles, and mapped back on output; heads with skull are
refused unless a brain mask is given or extracted). Geometry: the plan pads the
volume and the padding is undone; the output keeps the input file's orientation, affine and
header. A voxel size different from the training data's is refused unless ``resample`` is
set, in which case the volume is resampled to the training spacing and back.
Many inputs: :meth:`RefinerPipeline.refine_files` refines several volumes together (their
windows share network calls), and :func:`refine_paths` splits the inputs between torchrun
ranks. Sampling: what the settings ask for, else the refiner's default — a distilled student
(:mod:`realdeal.training.distill`) runs its own sampler at the steps its checkpoint records.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from realdeal.config import from_dict
from realdeal.data.brain import check_inputs
from realdeal.data.dataset import find_inputs
from realdeal.data.intensity import ScanOptions, scan_to_model_space
from realdeal.data.io import Volume, is_nifti_path, load_volume, nifti_stem
from realdeal.data.transforms import IntensityScaler, Resample
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import (
    DEFAULT_SAMPLING,
    Sampling,
    SamplingConfig,
    check_number,
    sampling_fields,
)
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.inference.plan import Plan, PlanConfig, make_plan, official_plan
from realdeal.inference.refine import RefineJob, RefineResult, refine_volume, refine_volumes
from realdeal.inference.seams import seam_score
from realdeal.models.loading import load_refiner
from realdeal.runtime.checkpoint import Distillation, RefinerCheckpoint
from realdeal.runtime.device import compiled_network, inference_precision
from realdeal.runtime.distributed import DistInfo, gather_objects, resolve_device, shard
from realdeal.utils.fs import write_json_atomic

log = logging.getLogger(__name__)

Intensity = Literal["auto", "scaled", "raw", "percentile"]
Traversal = Literal["wavefront", "official"]


@dataclasses.dataclass(frozen=True)
class RefineSettings(SamplingConfig):
    """How to refine: sampler (the fields of
    :class:`~realdeal.diffusion.registry.SamplingConfig`, shared with the LDM), plan and
    numerics (``realdeal refine`` flags)."""

    strength: float = 1.0
    """< 1: start from the coarse input noised to ``strength·T`` (SDEdit); 1 = the paper."""
    overlap: int | None = None
    """Window overlap in voxels; ``None`` = a quarter window (see ``inference.plan``)."""
    max_batch: int | None = 8
    """Windows per network call at most (bounds memory). Not part of the result: every window
    draws its noise from its own stream (:mod:`realdeal.inference.refine`), so a volume is the
    same with any value (up to the float rounding of batched convolutions)."""
    batch_volumes: int = 4
    """Volumes refined together (consecutive inputs): the next batch of each shares a network
    call, up to ``max_batch`` windows. Part of the computation: with a real network a
    window's output can change in the last float bits with the batch it shares, so runs
    with the same value (one process or any number of torchrun ranks) agree bit for bit."""
    traversal: Traversal = "wavefront"
    """Window traversal: ``wavefront`` (ours, :func:`~realdeal.inference.plan.make_plan`) or
    ``official`` (the authors', :func:`~realdeal.inference.plan.official_plan`). Called
    ``schedule`` before (``--schedule``, and in old ``refine.json`` files)."""
    skip_background: bool = True
    seed: int = 0
    precision: str = "auto"
    """``fp32``, ``bf16`` or ``auto`` (bf16 on CUDA and on CPUs with native bf16, else fp32; see
    :func:`~realdeal.runtime.device.inference_precision`)."""
    compile: str | None = None
    """A ``torch.compile`` backend (``inductor``) for the network, or ``None`` (eager, the
    default). Every call is padded to ``max_batch`` windows so that it compiles once
    (:func:`~realdeal.runtime.device.compiled_network`). Compilation costs time once per
    process and then makes every volume faster, so it is off by default and worth it for many
    volumes or many steps (measured on an H100: docs/results/gpu.md)."""
    intensity: Intensity = "auto"
    """See :mod:`realdeal.data.intensity`."""
    resample: bool = False
    brain_mask: str | None = None
    """Brain mask file, or folder of ``<input stem>.nii.gz`` masks (see ``data.brain``)."""
    skull_strip: bool = False
    """Extract the brain by MNI152 registration (:func:`realdeal.data.brain.extract_brain`)."""
    allow_head: bool = False
    """Refine scans that look like heads with skull anyway (warns)."""

    def __post_init__(self) -> None:
        """Refuse out-of-range settings where they are made (from flags, a dict or Python),
        each with a one-line :class:`~realdeal.errors.ConfigError` naming the flag: η finite
        in [0, 1] (:data:`~realdeal.diffusion.registry.ETA_RANGE`), strength finite in
        (0, 1], counts at least 1. A NaN here would otherwise refine every voxel to NaN."""
        super().__post_init__()
        object.__setattr__(
            self,
            "strength",
            check_number(self.strength, "strength (--strength)", 0.0, 1.0, lo_open=True),
        )
        for name, flag, value in (
            ("max_batch", "--max-batch", self.max_batch),
            ("batch_volumes", "--batch-volumes", self.batch_volumes),
        ):
            if value is None and name != "batch_volumes":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(
                    f"{name} ({flag}) must be an integer of at least 1, got {value!r}"
                )
        if self.overlap is not None and (
            isinstance(self.overlap, bool)
            or not isinstance(self.overlap, numbers.Integral)
            or self.overlap < 0
        ):
            raise ConfigError(
                f"overlap (--overlap) must be an integer of at least 0, got {self.overlap!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefineSettings:
        """Settings from a dict (e.g. ``refine.json``'s ``settings``); an old ``schedule``
        key is read as ``traversal``."""
        data = dict(data)
        if "schedule" in data and "traversal" not in data:
            data["traversal"] = data.pop("schedule")
        return from_dict(cls, data)


class RefinerPipeline:
    """A trained refiner ready to refine volumes."""

    def __init__(
        self,
        unet: nn.Module,
        schedule: NoiseSchedule,
        window: int,
        spacing: tuple[float, float, float] | None,
        scaler: IntensityScaler | None,
        device: str | torch.device = "cpu",
        target: str = "image",
        residual_scale: float = 1.0,
        distillation: Distillation | None = None,
    ):
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # oneDNN's 3-D convolutions run faster on channels-last weights: the demo refiner's
            # 32³ windows took 62 ms each against 75 ms (fp32, 2 cores, batch 8); on CUDA the
            # paper refiner is slower that way (docs/results/gpu.md), so only here.
            unet = unet.to(memory_format=torch.channels_last_3d)
        self.unet = unet.eval()
        self.schedule = schedule
        self.window = int(window)
        self.spacing = spacing
        self.scaler = scaler
        self.target, self.residual_scale = target, float(residual_scale)
        self.distillation = distillation
        """A distilled student's record: it then samples with its own sampler, steps and
        spacing by default (:attr:`default_sampling`); ``None`` for any other refiner."""
        self.checkpoint: RefinerCheckpoint | None = None
        """The checkpoint's payload when made by :meth:`from_checkpoint`."""
        self._compiled: tuple[Any, nn.Module | None] = (None, None)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
    ) -> RefinerPipeline:
        """The pipeline of a refiner checkpoint; the checkpoint's typed payload is kept as
        :attr:`checkpoint`."""
        r = load_refiner(path, device, ema)
        schedule = NoiseSchedule(from_dict(ScheduleConfig, r.checkpoint.config["schedule"]))
        pipe = cls(r.unet, schedule, r.window, r.spacing, r.scaler, device, target=r.target,
                   residual_scale=r.residual_scale, distillation=r.distillation)  # fmt: skip
        pipe.checkpoint = r.checkpoint
        return pipe

    def __call__(
        self,
        volume: Volume | np.ndarray | torch.Tensor,
        settings: RefineSettings | None = None,
        show_progress: bool = True,
        **overrides: Any,
    ) -> Volume | np.ndarray | torch.Tensor:
        """Refine ``volume`` and return the same kind of thing.

        A :class:`~realdeal.data.io.Volume` comes back as a Volume with the same geometry
        (its intensities and voxel size are handled as for files: see the module docstring).
        An array or tensor ``(X, Y, Z)`` is taken to be on the refiner's training grid (voxel
        size ``spacing``); ``(N, X, Y, Z)`` refines ``N`` volumes together (their windows share
        network calls, up to ``max_batch``) — e.g. a batch straight from
        :class:`~realdeal.pipelines.ldm.LatentDiffusionPipeline`. Arrays come back as float32
        arrays, tensors as tensors of the input's dtype on its device. ``settings`` (default
        :class:`RefineSettings`) with keyword ``overrides`` of its fields, e.g.
        ``pipe(vol, steps=20, seed=1)``.
        """
        settings = dataclasses.replace(settings or RefineSettings(), **overrides)
        if isinstance(volume, Volume):
            return self._refine_volumes([volume], settings, show_progress)[0]
        as_tensor = isinstance(volume, torch.Tensor)
        arr = volume.detach().float().cpu().numpy() if as_tensor else np.asarray(volume)
        if arr.ndim not in (3, 4):
            raise ConfigError(f"refine an (X, Y, Z) or (N, X, Y, Z) volume, got shape {arr.shape}")
        spacing = self.spacing or (1.0, 1.0, 1.0)
        vols = [
            Volume(np.asarray(a, dtype=np.float32), np.diag([*spacing, 1.0]))
            for a in (arr if arr.ndim == 4 else arr[None])
        ]
        out = np.stack([v.data for v in self._refine_volumes(vols, settings, show_progress)])
        out = out if arr.ndim == 4 else out[0]
        if as_tensor:
            return torch.from_numpy(out).to(device=volume.device, dtype=volume.dtype)
        return out

    def _refine_volumes(
        self, vols: list[Volume], settings: RefineSettings, show_progress: bool
    ) -> list[Volume]:
        """Refined copies of in-memory volumes, in order."""
        out: dict[int, Volume] = {}
        for i, vol, refined, _, _ in self._refine_each(
            ((i, lambda v=v: v) for i, v in enumerate(vols)), len(vols), settings, show_progress
        ):
            out[i] = vol.with_data(refined)
        return [out[i] for i in range(len(vols))]

    def _refine_each(self, sources, n: int, settings: RefineSettings, show_progress: bool):
        """Refine ``(key, load)`` sources (``load()`` gives a :class:`Volume`) together; yields
        ``(key, volume, refined data in the volume's space, job, result)`` as each finishes
        (see :func:`refine_volumes`: at most ``n`` volumes in flight, ``max_batch`` windows a
        network call). Volumes are loaded lazily, as the loop makes room."""

        def jobs():
            for key, load in sources:
                vol = load()
                x, back = self._to_model_space(vol, settings)
                plan = self.plan(x, settings)
                log.info(
                    "%s: %d windows in %d waves (%d batches), %d skipped",
                    vol.path or f"volume {key}", plan.stats.windows_run, plan.stats.waves,
                    plan.stats.batches, plan.stats.windows_skipped,
                )  # fmt: skip
                yield RefineJob(x, plan, settings.seed, key=(key, vol, back))

        with torch.no_grad():
            for job, res in refine_volumes(
                jobs(), max_batch=settings.max_batch, max_volumes=n,
                **self._loop(settings, show_progress),
            ):  # fmt: skip
                key, vol, back = job.key
                refined = back(res.refined).astype(np.float32)
                _check_finite(refined, job.coarse, vol.path or f"volume {key}", settings)
                yield key, vol, refined, job, res

    def plan(self, coarse: np.ndarray, settings: RefineSettings) -> Plan:
        """The plan for ``coarse`` (printable without running the network)."""
        if settings.traversal == "official":
            return official_plan(coarse.shape, window=self.window, max_batch=settings.max_batch)
        cfg = PlanConfig(
            window=self.window, overlap=settings.overlap, max_batch=settings.max_batch,
            skip_background=settings.skip_background,
        )  # fmt: skip
        return make_plan(coarse.shape, cfg, coarse=coarse)

    @property
    def default_sampling(self) -> Sampling:
        """What runs where the settings name no sampler: a distilled student's own sampler at
        its native steps and spacing, else the target's
        :data:`~realdeal.diffusion.registry.DEFAULT_SAMPLING` row."""
        d = self.distillation
        if d is not None:
            return Sampling(d.sampler, d.steps, 0.0, d.spacing)  # type: ignore[arg-type]
        return DEFAULT_SAMPLING[self.target]

    def _sampling_config(self, settings: RefineSettings | None) -> SamplingConfig:
        """The sampling fields of ``settings``; on a student, naming its own sampler without
        steps or spacing means its native ones (as naming no sampler does)."""
        sc = sampling_fields(settings or RefineSettings())
        if self.distillation is not None and sc.sampler == self.distillation.sampler:
            sc = dataclasses.replace(sc, sampler=None)
        return sc

    def sampling(self, settings: RefineSettings | None = None) -> Sampling:
        """The sampler, steps, η, spacing and variance ``settings`` run with on this refiner
        (:attr:`default_sampling` where they leave them unset)."""
        return self._sampling_config(settings).resolve(self.default_sampling)

    def refine_array(self, coarse: np.ndarray, settings: RefineSettings) -> RefineResult:
        """Refine a volume ``(X, Y, Z)`` in [−1, 1]."""
        plan = self.plan(coarse, settings)
        with torch.no_grad():
            res = refine_volume(coarse, plan=plan, seed=settings.seed, **self._loop(settings))
        _check_finite(res.refined, coarse, "volume", settings)
        return res

    def _loop(self, settings: RefineSettings, show_progress: bool = True) -> dict[str, Any]:
        """Keyword arguments of :func:`refine_volumes` (network, sampler, numerics) for ``settings``."""
        sampler = self._sampling_config(settings).make(
            self.schedule, self.default_sampling, clip_x0=self.target == "image"
        )
        amp = inference_precision(settings.precision, self.device)
        return dict(
            denoiser=Denoiser(self._network(settings), self.schedule), sampler=sampler, device=self.device,
            autocast_dtype=amp, target=self.target, residual_scale=self.residual_scale,
            strength=settings.strength, show_progress=show_progress,
        )  # fmt: skip

    def _network(self, settings: RefineSettings) -> nn.Module:
        """The U-Net, or its compiled form at ``max_batch`` windows (made once, then kept)."""
        if not settings.compile:
            return self.unet
        if settings.max_batch is None:
            raise ConfigError("compile needs max_batch (the one batch size it compiles for)")
        key = (settings.compile, settings.max_batch)
        if self._compiled[0] != key:
            self._compiled = (
                key,
                compiled_network(self.unet, settings.max_batch, settings.compile),
            )
        return self._compiled[1]

    def _to_model_space(self, vol: Volume, settings: RefineSettings):
        """(array in [−1, 1] on the model's spacing, function mapping a result back)."""

        path = vol.path
        rs = None
        if self.spacing is not None and not np.allclose(vol.spacing, self.spacing, atol=1e-3):
            msg = f"voxel size {tuple(round(v, 3) for v in vol.spacing)} mm differs from the refiner's training data {self.spacing}"
            if not settings.resample:
                raise InputError(path, msg + "; pass --resample to resample it (and back)")
            log.warning("%s: %s; resampling", path, msg)
            rs = Resample(vol.shape, vol.spacing, self.spacing)
        options = ScanOptions(
            settings.intensity, settings.brain_mask, settings.skull_strip, settings.allow_head
        )
        scan = scan_to_model_space(vol, options, self.scaler)
        log.info("%s: intensity %s (%s)", path, scan.space.mode, scan.space.reason)
        y = scan.data
        if rs is not None:
            y = rs.forward(y, order=1, fill=-1.0)
        if not (y > -1.0 + 0.05).any():
            raise InputError(
                path,
                "the volume is all background in model space; nothing to refine (if it is a "
                "raw scan, check its intensities: --intensity percentile maps its own brain)",
            )

        def back(r: np.ndarray) -> np.ndarray:
            if rs is not None:
                r = rs.inverse(r, order=1, fill=-1.0)
            return scan.restore(r)

        return y, back

    def refine_file(
        self, src: str | os.PathLike, dst: str | os.PathLike, settings: RefineSettings
    ) -> dict[str, Any]:
        """Refine one NIfTI file into ``dst`` (same orientation, affine and header)."""
        return self.refine_files([(src, dst)], settings)[0]

    def refine_files(
        self,
        pairs: list[tuple[str | os.PathLike, str | os.PathLike]],
        settings: RefineSettings,
        show_progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Refine ``(source, destination)`` NIfTI pairs together (see :func:`refine_volumes`):
        the next batch of every volume shares a network call, up to ``settings.max_batch``
        windows; each output is written as soon as its volume is done. All pairs are in
        flight at once (:func:`refine_paths` passes groups of ``settings.batch_volumes``).
        Returns one record per pair, in order (plan statistics, U-Net evaluations, seconds
        in flight, seam scores)."""

        resolved = self.sampling(settings)
        sources = ((i, lambda src=src: load_volume(src)) for i, (src, _) in enumerate(pairs))
        records: dict[int, dict[str, Any]] = {}
        for i, vol, refined, job, res in self._refine_each(
            sources, len(pairs), settings, show_progress
        ):
            src, dst = pairs[i]
            vol.with_data(refined).save(dst)
            brain = job.coarse > -1.0 + 0.05
            records[i] = {
                "input": str(src),
                "output": str(dst),
                "seconds": round(res.compute_seconds, 3),
                "seconds_in_flight": round(res.seconds, 3),
                "sampler": {"name": resolved.sampler, "steps": resolved.steps, "eta": resolved.eta},
                "unet_evaluations": res.unet_evaluations,
                "network_calls": res.network_calls,
                # undefined numbers (a one-window volume has no seams) are written as null
                "plan": {k: _finite_or_none(v) for k, v in res.plan.stats.to_dict().items()},
                "seam_score_input": _finite_or_none(float(seam_score(job.coarse, res.plan, brain))),
                "seam_score_output": _finite_or_none(
                    float(seam_score(res.refined, res.plan, brain))
                ),
            }
        return [records[i] for i in range(len(pairs))]


def _finite_or_none(x: Any) -> Any:
    """``x``, or ``None`` where it is a non-finite float (JSON has no NaN: written as null)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def format_score(x: float | None, spec: str = ".3f") -> str:
    """A score for printing; ``n/a`` where it is undefined (``None``)."""
    return "n/a" if x is None else format(x, spec)


def _check_finite(
    refined: np.ndarray, coarse: np.ndarray, label: Any, settings: RefineSettings
) -> None:
    """Refuse a refined volume holding NaN or inf (before it is saved or returned), with a
    one-line :class:`~realdeal.errors.RealDealError` naming the volume and the likely cause."""
    bad = int(np.size(refined) - np.count_nonzero(np.isfinite(refined)))
    if not bad:
        return
    bad_in = int(np.size(coarse) - np.count_nonzero(np.isfinite(coarse)))
    cause = (
        f"the input holds {bad_in} non-finite voxels in model space"
        if bad_in
        else f"the network diverged (precision {settings.precision}: try --precision fp32, or "
        "check the checkpoint)"
    )
    raise RealDealError(
        f"{label}: the refined volume has {bad} non-finite (NaN or inf) voxels, so it is not "
        f"written; {cause}"
    )


def refine_paths(
    checkpoint: str | os.PathLike,
    inputs: list[str],
    out: str | os.PathLike,
    settings: RefineSettings = RefineSettings(),
    device: str = "auto",
    plan_only: bool = False,
    dist: DistInfo | None = None,
) -> list[dict[str, Any]]:
    """Refine NIfTI files (or folders of them) into ``out`` (a folder, or a file for one input).

    Consecutive inputs are refined ``settings.batch_volumes`` at a time; under torchrun
    (``dist``, see :func:`~realdeal.runtime.distributed.inference_group`) the ranks take
    these groups in turn, each on its own device, so every output equals a one-process run's.
    Rank 0 writes ``refine.json`` (settings, per-volume plan statistics, timings, seam
    scores) beside the outputs once every rank is done. With ``plan_only`` nothing is
    written and the records hold the plans' descriptions. Returns every input's record, in
    input order (on every rank).
    """

    if settings.batch_volumes < 1:
        raise ConfigError(f"batch_volumes must be at least 1, got {settings.batch_volumes}")
    files = find_inputs(inputs if len(inputs) > 1 else inputs[0])
    check_inputs(files, settings.brain_mask)  # before the (slow) checkpoint load
    out = Path(out)
    single = len(files) == 1 and is_nifti_path(out)
    if not single and out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    dsts = [out if single else out / f"{nifti_stem(f)}.nii.gz" for f in files]
    seen: dict[Path, Path] = {}
    for f, dst in zip(files, dsts, strict=True):
        if Path(dst).resolve() == Path(f).resolve():
            raise InputError(dst, "output would overwrite its input")
        if dst in seen and not plan_only:
            raise InputError(f, f"has the same output name as {seen[dst]} ({dst.name})")
        seen[dst] = f
    n = settings.batch_volumes
    groups = [list(range(i, min(i + n, len(files)))) for i in range(0, len(files), n)]
    mine = shard(groups, dist)
    if dist is not None and dist.distributed and dist.is_main and len(groups) < dist.world_size:
        log.warning(
            "%d input(s) in %d group(s) of %d: %d of %d ranks have nothing to do "
            "(a smaller --batch-volumes spreads them)",
            len(files), len(groups), n, dist.world_size - len(groups), dist.world_size,
        )  # fmt: skip
    pipe = RefinerPipeline.from_checkpoint(checkpoint, device=resolve_device(device))
    show = dist is None or dist.is_main
    records: dict[int, dict[str, Any]] = {}
    for g in mine:
        if plan_only:
            for i in g:
                x, _ = pipe._to_model_space(load_volume(files[i]), settings)
                records[i] = {"input": str(files[i]), "plan": pipe.plan(x, settings).describe()}
            continue
        recs = pipe.refine_files([(files[i], dsts[i]) for i in g], settings, show)
        for i, rec in zip(g, recs, strict=True):
            log.info(
                "%s → %s: %.1f s of network calls, %d U-Net evaluations, seam score %s (input %s)",
                rec["input"], rec["output"], rec["seconds"], rec["unet_evaluations"],
                format_score(rec["seam_score_output"]), format_score(rec["seam_score_input"]),
            )  # fmt: skip
            records[i] = rec
    for part in gather_objects(records, dist):
        records.update(part)
    ordered = [records[i] for i in range(len(files))]
    if not plan_only and show:
        report = {
            "checkpoint": str(checkpoint),
            "settings": dataclasses.asdict(settings),
            "sampling": pipe.sampling(settings)._asdict(),  # the settings resolved on this refiner
            "processes": dist.world_size if dist is not None else 1,
            "volumes": ordered,
        }
        write_json_atomic((out.parent if single else out) / "refine.json", report)
    return ordered
