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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from realdeal.config import from_dict
from realdeal.data.io import Volume, load_volume
from realdeal.data.transforms import IntensityScaler, Resample
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.plan import Plan, PlanConfig, make_plan, official_plan
from realdeal.diffusion.refine import RefineResult, make_refine_sampler, refine_volume
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.errors import ConfigError, InputError
from realdeal.models.loading import unet_from_checkpoint
from realdeal.training.checkpoint import load_checkpoint
from realdeal.training.engine import resolve_precision
from realdeal.utils.fs import write_json_atomic

log = logging.getLogger(__name__)

Intensity = Literal["auto", "scaled", "raw", "percentile"]


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """How to refine: sampler, plan and numerics (``realdeal refine`` flags)."""

    sampler: str | None = None
    """``ddpm``, ``ddim`` or ``dpm++``; ``None``: by the refiner's target, see
    :data:`DEFAULT_SAMPLING`."""
    steps: int | None = None
    """Reverse steps; default 1,000 for ddpm, 50 for ddim, 20 for dpm++ (or as
    :data:`DEFAULT_SAMPLING` says when ``sampler`` is ``None``)."""
    eta: float | None = None
    """DDIM η; ``None``: 0, or as :data:`DEFAULT_SAMPLING` says."""
    strength: float = 1.0
    """< 1: start from the coarse input noised to ``strength·T`` (SDEdit); 1 = the paper."""
    overlap: int | None = None
    """Window overlap in voxels; ``None`` = a quarter window (see ``diffusion.plan``)."""
    max_batch: int | None = 8
    schedule: Literal["wavefront", "official"] = "wavefront"
    skip_background: bool = True
    seed: int = 0
    precision: str = "fp32"
    intensity: Intensity = "auto"
    """See :mod:`realdeal.data.intensity`."""
    resample: bool = False
    brain_mask: str | None = None
    """Brain mask file, or folder of ``<input stem>.nii.gz`` masks (see ``data.brain``)."""
    skull_strip: bool = False
    """Extract the brain by MNI152 registration (:func:`realdeal.data.brain.extract_brain`)."""
    allow_head: bool = False
    """Refine scans that look like heads with skull anyway (warns)."""


#: (sampler, steps, η) used when none is asked for, by the refiner's target. ``residual`` (the
#: ``cpu-small`` refiner): DDIM with η = 1 — on the shipped refiner DPM-Solver++ (10 or 20 steps)
#: overshot the white-matter noise (std of x − median₃ 0.072 / 0.070, original 0.042) and DDIM
#: η = 1 matched it (0.043); 10 steps is the demo's speed/texture trade-off (benchmarks/refine.py:
#: 20 steps recover about half of the remaining sharpness gap to a 50-step DDPM reference at
#: twice the cost). ``image`` (the ``paper`` refiner, ε-prediction): DPM-Solver++(2M), 20 steps.
DEFAULT_SAMPLING: dict[str, tuple[str, int, float]] = {
    "residual": ("ddim", 10, 1.0),
    "image": ("dpm++", 20, 0.0),
}


def resolve_sampling(settings: RefineSettings, target: str) -> RefineSettings:
    """``settings`` with sampler, steps and η filled in for a refiner with ``target``."""
    if settings.sampler is None:
        sampler, steps, eta = DEFAULT_SAMPLING[target]
        return dataclasses.replace(
            settings,
            sampler=sampler,
            steps=steps if settings.steps is None else settings.steps,
            eta=eta if settings.eta is None else settings.eta,
        )
    return settings if settings.eta is not None else dataclasses.replace(settings, eta=0.0)


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
    ):
        self.unet = unet.eval()
        self.schedule = schedule
        self.window = int(window)
        self.spacing = spacing
        self.scaler = scaler
        self.device = torch.device(device)
        self.target, self.residual_scale = target, float(residual_scale)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
    ) -> tuple[RefinerPipeline, dict[str, Any]]:
        ckpt = load_checkpoint(path, kind="refiner")
        run = json.loads(ckpt["config"])
        unet = unet_from_checkpoint(ckpt, path, ema)
        extra = ckpt.get("extra", {})
        spacing = tuple(float(v) for v in extra["spacing"]) if extra.get("spacing") else None
        scaler = IntensityScaler.from_dict(extra["scaler"]) if extra.get("scaler") else None
        schedule = NoiseSchedule(from_dict(ScheduleConfig, run["schedule"]))
        pipe = cls(unet.to(device), schedule, int(extra.get("window", run.get("window", 64))),
                   spacing, scaler, device, target=run.get("target", "image"),
                   residual_scale=run.get("residual_scale") or 1.0)  # fmt: skip
        return pipe, ckpt

    def plan(self, coarse: np.ndarray, settings: RefineSettings) -> Plan:
        """The plan for ``coarse`` (printable without running the network)."""
        if settings.schedule == "official":
            return official_plan(coarse.shape, window=self.window, max_batch=settings.max_batch)
        cfg = PlanConfig(
            window=self.window, overlap=settings.overlap, max_batch=settings.max_batch,
            skip_background=settings.skip_background,
        )  # fmt: skip
        return make_plan(coarse.shape, cfg, coarse=coarse)

    def refine_array(self, coarse: np.ndarray, settings: RefineSettings) -> RefineResult:
        """Refine a volume ``(X, Y, Z)`` in [−1, 1]."""
        plan = self.plan(coarse, settings)
        settings = resolve_sampling(settings, self.target)
        sampler = make_refine_sampler(
            settings.sampler, self.schedule, settings.steps, settings.eta,
            clip_x0=self.target == "image",
        )  # fmt: skip
        amp, _ = resolve_precision(settings.precision, self.device)  # type: ignore[arg-type]
        log.info(
            "refine: %d windows in %d waves (%d batches), %d skipped, %d steps each",
            plan.stats.windows_run, plan.stats.waves, plan.stats.batches,
            plan.stats.windows_skipped, len(sampler.timesteps()),
        )  # fmt: skip
        with torch.no_grad():
            return refine_volume(
                coarse, Denoiser(self.unet, self.schedule), sampler, plan, seed=settings.seed,
                device=self.device, autocast_dtype=amp, target=self.target,
                residual_scale=self.residual_scale, strength=settings.strength,
            )  # fmt: skip

    def _to_model_space(self, vol: Volume, settings: RefineSettings):
        """(array in [−1, 1] on the model's spacing, function mapping a result back)."""
        from realdeal.data.intensity import ScanOptions, scan_to_model_space

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
        vol = load_volume(src)
        x, back = self._to_model_space(vol, settings)
        t0 = time.perf_counter()
        settings = resolve_sampling(settings, self.target)
        res = self.refine_array(x, settings)
        vol.with_data(back(res.refined).astype(np.float32)).save(dst)
        from realdeal.diffusion.seams import seam_score

        brain = x > -1.0 + 0.05
        seams_in = float(seam_score(x, res.plan, brain))
        seams_out = float(seam_score(res.refined, res.plan, brain))
        return {
            "input": str(src),
            "output": str(dst),
            "seconds": time.perf_counter() - t0,
            "sampler": {"name": settings.sampler, "steps": settings.steps, "eta": settings.eta},
            "unet_evaluations": res.unet_evaluations,
            "network_calls": res.network_calls,
            "plan": res.plan.stats.to_dict(),
            "seam_score_input": seams_in,
            "seam_score_output": seams_out,
        }


def refine_paths(
    checkpoint: str | os.PathLike,
    inputs: list[str],
    out: str | os.PathLike,
    settings: RefineSettings = RefineSettings(),
    device: str = "cpu",
    plan_only: bool = False,
) -> list[dict[str, Any]]:
    """Refine NIfTI files (or folders of them) into ``out`` (a folder, or a file for one input).

    Writes ``refine.json`` (settings, per-volume plan statistics, timings, seam scores) beside
    the outputs. With ``plan_only`` prints nothing to disk and returns the plans' descriptions.
    """
    from realdeal.data.brain import check_inputs
    from realdeal.data.dataset import find_inputs
    from realdeal.data.io import is_nifti_path, nifti_stem

    files = find_inputs(inputs if len(inputs) > 1 else inputs[0])
    check_inputs(files, settings.brain_mask)  # before the (slow) checkpoint load
    pipe, _ = RefinerPipeline.from_checkpoint(checkpoint, device=device)
    out = Path(out)
    single = len(files) == 1 and is_nifti_path(out)
    if not single and out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    records = []
    for f in files:
        if plan_only:
            vol = load_volume(f)
            x, _ = pipe._to_model_space(vol, settings)
            plan = pipe.plan(x, settings)
            records.append({"input": str(f), "plan": plan.describe()})
            continue
        dst = out if single else out / f"{nifti_stem(f)}.nii.gz"
        if Path(dst).resolve() == Path(f).resolve():
            raise InputError(dst, "output would overwrite its input")
        rec = pipe.refine_file(f, dst, settings)
        log.info(
            "%s → %s: %.1f s, %d U-Net evaluations, seam score %.3f (input %.3f)",
            f, dst, rec["seconds"], rec["unet_evaluations"], rec["seam_score_output"],
            rec["seam_score_input"],
        )  # fmt: skip
        records.append(rec)
    if not plan_only:
        report = {
            "checkpoint": str(checkpoint),
            "settings": dataclasses.asdict(settings),
            "volumes": records,
        }
        write_json_atomic((out.parent if single else out) / "refine.json", report)
    if not files:
        raise ConfigError("no inputs")
    return records
