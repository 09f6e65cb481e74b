"""Latent diffusion sampling: U-Net + schedule + sampler + latent scaling + decoder.

Like a diffusers pipeline, this only combines pieces that know nothing of each other:
noise ``(B, C, x, y, z)`` → sampler over the denoiser → undo latent scaling → decode to
images ``(B, X, Y, Z)`` in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import torch
from torch import nn

from realdeal.config import from_dict
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import DEFAULT_SAMPLING, SamplingConfig
from realdeal.diffusion.samplers import Sampler, sample
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.models.autoencoder import Autoencoder
from realdeal.models.latent_scaling import LatentScaler
from realdeal.models.loading import load_ldm
from realdeal.runtime.checkpoint import LDMCheckpoint
from realdeal.runtime.device import autocast_context, resolve_precision
from realdeal.runtime.distributed import DistInfo, gather_objects, shard
from realdeal.runtime.rng import STEP_NOISE_SALT, SampleStreams, per_sample_randn


class LatentDiffusionPipeline:
    """Generates image volumes from an LDM U-Net and the stage-1 decoder."""

    def __init__(
        self,
        unet: nn.Module,
        schedule: NoiseSchedule,
        scaler: LatentScaler,
        autoencoder: Autoencoder,
        latent_shape: tuple[int, ...],
        device: str | torch.device = "cpu",
    ):
        self.unet, self.schedule, self.scaler, self.autoencoder = (
            unet.eval(),
            schedule,
            scaler,
            autoencoder.eval(),
        )
        self.latent_shape = tuple(latent_shape)
        self.device = torch.device(device)
        self.checkpoint: LDMCheckpoint | None = None
        """The checkpoint's payload when made by :meth:`from_checkpoint`."""

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
    ) -> LatentDiffusionPipeline:
        """The pipeline of an LDM checkpoint (which carries its autoencoder); the checkpoint's
        typed payload (step, preset, dataset, …) is kept as :attr:`checkpoint`."""
        ldm = load_ldm(path, device, ema)
        schedule = NoiseSchedule(from_dict(ScheduleConfig, ldm.checkpoint.config["schedule"]))
        pipe = cls(ldm.unet, schedule, ldm.scaler, ldm.autoencoder, ldm.latent_shape, device)
        pipe.checkpoint = ldm.checkpoint
        return pipe

    @torch.no_grad()
    def __call__(
        self,
        n: int,
        sampling: SamplingConfig | str | Sampler | None = None,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int = 1,
        precision: str = "fp32",
        eta: float | None = None,
        show_progress: bool = True,
        *,
        sampler: str | None = None,
        num_steps: int | None = None,
    ) -> torch.Tensor:
        """``n`` images ``(n, X, Y, Z)`` in [-1, 1] on CPU; sample ``i`` depends only on ``seed + i``.

        ``sampling``: a :class:`~realdeal.diffusion.registry.SamplingConfig` (the same one
        the refiner's settings extend), a sampler name (``ddpm``, ``ddim``, ``dpm++``) or a
        ready sampler object; ``sampler``, ``steps`` and ``eta`` override its fields. Left
        unset it runs ``DEFAULT_SAMPLING["ldm"]`` (DDIM, 50 steps, η = 0); a named sampler
        takes its own default step count. (``num_steps`` is the old name of ``steps``.)

        Every random number of sample ``i`` comes from its own streams, seeded from
        ``seed + i``: its start noise from ``seed + i`` (on CPU) and the noise of every
        stochastic step (DDPM, DDIM with η > 0) from ``seed + i +``
        :data:`~realdeal.runtime.rng.STEP_NOISE_SALT` (on this pipeline's device;
        :class:`~realdeal.runtime.rng.SampleStreams`). So ``self(n, seed=s)[i]`` equals
        ``self(1, seed=s + i)[0]`` whatever ``batch_size`` (bit for bit where the network's
        output for a sample does not depend on the rest of its batch; real convolution kernels
        change with the batch size in the last float bits). A sample that comes out non-finite
        (NaN or inf) raises :class:`~realdeal.errors.RealDealError` naming it.
        """
        config = ldm_sampling(sampling, sampler=sampler, steps=steps, eta=eta, num_steps=num_steps)
        chosen = config.resolve(DEFAULT_SAMPLING["ldm"])
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        amp, _ = resolve_precision(precision, self.device)  # type: ignore[arg-type]
        smp = config.make(self.schedule, DEFAULT_SAMPLING["ldm"])
        out = []
        for start in range(0, n, int(batch_size)):
            seeds = [seed + i for i in range(start, min(n, start + int(batch_size)))]
            x_T = per_sample_randn(self.latent_shape, seeds).to(self.device)
            streams = SampleStreams(seeds, salt=STEP_NOISE_SALT, device=self.device)
            with autocast_context(amp, self.device):
                denoiser = Denoiser(self.unet, self.schedule)
                z = sample(
                    denoiser,
                    smp,
                    x_T,
                    generator=streams,
                    show_progress=show_progress,
                    desc=f"{chosen.sampler} {start + 1}-{start + len(seeds)}/{n}",
                )
                img = self.autoencoder.decode(self.scaler.inverse(z.float()))
            img = img.float()[:, 0].cpu()
            finite = torch.isfinite(img).flatten(1).all(1)
            if not bool(finite.all()):
                k = int((~finite).nonzero()[0])
                raise RealDealError(
                    f"sample {start + k} (seed {seeds[k]}) came out non-finite (NaN or inf) "
                    f"with {precision} precision; nothing is written for it (try --precision "
                    "fp32, or check the checkpoint)"
                )
            out.append(img)
        return torch.cat(out)


def ldm_sampling(
    sampling: SamplingConfig | str | Sampler | None = None,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    num_steps: int | None = None,
) -> SamplingConfig:
    """One :class:`~realdeal.diffusion.registry.SamplingConfig` from ``sampling`` and the
    overrides given (``num_steps``, the old name of ``steps``, warns)."""
    if num_steps is not None:
        warnings.warn("num_steps is now called steps", DeprecationWarning, stacklevel=3)
        if steps is not None and steps != num_steps:
            raise ConfigError(f"steps {steps} and num_steps {num_steps} disagree; give steps")
        steps = num_steps
    config = SamplingConfig.of(sampling)
    overrides = {
        k: v for k, v in (("sampler", sampler), ("steps", steps), ("eta", eta)) if v is not None
    }
    return dataclasses.replace(config, **overrides) if overrides else config


def _renamed_steps(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity written when the step count was called ``num_steps``, in today's names."""
    run = identity.get("run")
    if not isinstance(run, dict) or "num_steps" not in run:
        return identity
    run = {("steps" if k == "num_steps" else k): v for k, v in run.items()}
    return {**identity, "run": run}


def save_samples(
    pipeline: LatentDiffusionPipeline,
    n: int,
    out_dir: str | os.PathLike,
    reference: Any,
    settings: dict[str, Any],
    prefix: str = "sample",
    dist: DistInfo | None = None,
    **sample_kw: Any,
) -> list[str]:
    """Generate ``n`` volumes and write ``<prefix>_NNN.nii.gz`` with ``reference``'s geometry.

    ``reference`` is a :class:`~realdeal.data.io.Volume` on the prepared grid (its affine
    and header are reused). Volume ``i`` depends only on ``seed + i`` (every random number it
    draws comes from its own streams, see :meth:`LatentDiffusionPipeline.__call__`), whatever
    the batch size or the number of processes. ``batch_size`` volumes share each network call;
    under torchrun (``dist``) the ranks split the batches (rank ``r`` of ``N`` writes batches
    ``r, r + N, …``; batch ``b`` starts at global index ``b.start`` and so at seed
    ``seed + b.start``), so the files equal a one-process run's with the same batch size bit
    for bit, and a run with another batch size up to float rounding. The sampler settings are
    checked before anything is written; a volume that comes out non-finite is not written
    (:class:`~realdeal.errors.RealDealError`). Rank 0 writes
    ``<out_dir>/sample_config.json`` (``settings``, what identifies the run, the file names)
    before the first volume and again at the end. Returns every volume's path, in index order.

    A folder is one run's: run again with the same identity — ``settings`` (but ``n``; the
    checkpoint's sha256 instead of its path where ``settings`` has ``ldm_sha256``), seed,
    batch size, prefix and sampler settings — the run continues and volumes already there are
    kept, not made again; a folder holding samples of another run (its ``sample_config.json``
    says so), or sample files without a ``sample_config.json``, is refused with one
    :class:`~realdeal.errors.InputError` line before anything is written.
    """
    import contextlib
    import json
    from pathlib import Path

    from realdeal.utils.fs import write_json_atomic

    def identity_of(record: dict[str, Any]) -> dict[str, Any]:
        skip = {"n", "files", "format", "identity"} | ({"ldm"} if "ldm_sha256" in record else set())
        return {k: v for k, v in record.items() if k not in skip}

    def earlier_run(folder: Path, identity: dict[str, Any]) -> list[str]:
        """The files of the same run already in ``folder`` (refuses another run's folder)."""
        if folder.exists() and not folder.is_dir():
            raise InputError(folder, "exists and is not a folder")
        record = folder / "sample_config.json"
        found = sorted(folder.glob(f"{prefix}_*.nii.gz")) if folder.is_dir() else []
        if not record.exists():
            if found:
                raise InputError(
                    folder,
                    f"holds {found[0].name} but no sample_config.json: samples of an unknown "
                    "run; refusing to add to them (choose another folder)",
                )
            return []
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError) as e:
            raise InputError(record, f"unreadable ({e}); refusing to write beside it") from e
        if not isinstance(old, dict):
            raise InputError(record, "is not a sample record; refusing to write beside it")
        if isinstance(old.get("identity"), dict):
            theirs, mine = _renamed_steps(old["identity"]), identity
            keys = set(theirs) | set(mine)
        else:  # written before identities were: compare the settings both name
            theirs = {k: v for k, v in old.items() if k not in ("n", "files")}
            mine = {k: v for k, v in settings.items() if k not in ("n", "files")}
            keys = set(theirs) & set(mine)
        diff = sorted(k for k in keys if theirs.get(k) != mine.get(k))
        if diff and not found:  # a record of a run that wrote no volume: nothing to mix with
            return []
        if diff:
            shown = ", ".join(f"{k} {theirs.get(k)!r} → {mine.get(k)!r}" for k in diff[:4])
            raise InputError(
                folder,
                f"holds samples of another run ({shown}); refusing to mix them (choose another "
                "folder)",
            )
        files = old.get("files")
        return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []

    if "num_steps" in sample_kw:  # the old name of ``steps``
        sample_kw["steps"] = ldm_sampling(num_steps=sample_kw.pop("num_steps")).steps
    # bad sampler settings fail here, before any folder or file is made
    ldm_sampling(**{k: sample_kw.get(k) for k in ("sampling", "sampler", "steps", "eta")})
    if tuple(reference.shape) != tuple(
        s * pipeline.autoencoder.config.downsampling for s in pipeline.latent_shape[1:]
    ):
        raise InputError(
            None, f"reference grid {tuple(reference.shape)} does not match the model's image size"
        )
    out_dir = Path(out_dir)
    seed = int(sample_kw.pop("seed", 0))
    batch = max(1, int(sample_kw.pop("batch_size", 1)))
    sampling = {k: v for k, v in sample_kw.items() if k != "show_progress"}
    identity = {
        **identity_of(settings),
        "run": {"prefix": prefix, "seed": seed, "batch_size": batch, **sampling},
    }
    earlier = earlier_run(out_dir, identity)
    main = dist is None or dist.is_main
    names = [f"{prefix}_{i:03d}.nii.gz" for i in range(n)]
    files = sorted(set(earlier) | set(names))

    def record(done: list[str]) -> None:
        write_json_atomic(
            out_dir / "sample_config.json",
            {**settings, "format": "realdeal-samples", "identity": identity, "files": done},
        )

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if main:  # the run's identity is on disk before its first volume
        record(sorted(set(earlier) & {p.name for p in out_dir.iterdir()}))
    sample_kw.setdefault("show_progress", main)
    # Batches of consecutive indices; volume i starts from seed + i in any batch. Ranks take
    # whole batches, so the files equal a one-process run's with the same batch size bit for
    # bit (a network's output can change with its batch in the last float bits). A batch whose
    # files are all there (an earlier, interrupted call of this run) is skipped.
    batches = [range(s, min(n, s + batch)) for s in range(0, n, batch)]
    try:
        for b in shard(batches, dist):
            todo = [i for i in b if not (out_dir / names[i]).is_file()]
            if not todo:
                continue
            imgs = pipeline(len(b), seed=seed + b.start, batch_size=batch, **sample_kw)
            for i, img in zip(b, imgs, strict=True):
                if i in todo:
                    reference.with_data(img.numpy()).save(out_dir / names[i])
    except BaseException:
        if main and not any(out_dir.glob(f"{prefix}_*.nii.gz")):  # no volume: leave nothing
            (out_dir / "sample_config.json").unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
        raise
    gather_objects(None, dist)  # every rank has written its volumes
    if main:
        record(files)
    return [str(out_dir / name) for name in names]
