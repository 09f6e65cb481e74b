"""Refiner training: (original, coarse) patch pairs, masks and the masked ε-loss (paper §2.2; docs/method.md#spec-5).

One training sample is one window of one subject: ``x`` the original patch, ``x̂`` the
autoencoder reconstruction of the same window (``realdeal reconstruct`` writes those into
the prepared dataset), ``M`` a mask from :mod:`realdeal.inference.masks` (True = generate).
Then, exactly as the paper (built by :mod:`realdeal.inference.conditioning`, which inference
shares):

* ``y_prev = x·(1−M) + g·M`` with ``g ~ N(0, I)``;
* ``x_t = (√ᾱ_t x + √(1−ᾱ_t) ε)·M + x·(1−M)`` — the known region stays clean;
* loss ``‖(ε − f(x_t, t, x̂, y_prev))·M‖²``, averaged over the ``M = 1`` voxels.

``target="residual"`` (the ``cpu-small`` preset; not in the paper) diffuses the normalised
residual ``r = (x − x̂)/s`` instead of ``x``: the same masked loss and inputs, with every
image-space quantity (``x``, the known region, ``y_prev``) replaced by its residual. The
coarse volume then carries the anatomy by construction and the network only has to learn
the detail and noise the autoencoder removed — a far easier task that a small network learns
in minutes on a CPU, where the image-space model (the paper's) needs GPU-days before its
high-noise predictions stop destroying the anatomy. ``s`` (``residual_scale``) defaults to the
standard deviation of the residual inside the brain over the training subjects, measured
before training and stored with the checkpoint. ``cpu-small`` also predicts ``v`` instead of
ε: an under-trained ε-model's clean estimate at high noise is its ε error amplified by
``1/√ᾱ_t`` (≈ 15 at t = 999), while a v-model's stays bounded.

Window positions are drawn ``uniform`` over every position where the window fits, or
``stratified`` over 10 equal bins of brain fraction (each non-empty bin equally likely, then a
position uniformly inside it; empty bins are skipped), as the official fine-tuning run. Every
random choice of a sample comes from its per-sample seed, so runs are reproducible and resume
exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realdeal.config import save_config, to_dict
from realdeal.data.dataset import PreparedDataset
from realdeal.data.fraction import brain_fraction_map
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError, InputError
from realdeal.inference.conditioning import training_inputs
from realdeal.inference.masks import MaskConfig, sample_mask
from realdeal.models.unet import build_unet
from realdeal.pipelines.autoencoder import require_reconstructions
from realdeal.presets import Positions, RefinerRunConfig, Target
from realdeal.runtime.rng import batch_draws, sample_randint, sample_randn, seed_everything
from realdeal.training.distributed import barrier, init_distributed
from realdeal.training.engine import TrainResult, train
from realdeal.training.run_folder import CONFIG_NAME, dataset_fingerprint, open_run
from realdeal.utils.fs import (
    atomic_path,
    check_fingerprint,
    file_fingerprint,
    write_json_atomic,
    written_after,
)
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)

FRACTION_BINS = 10


class PatchPairs(torch.utils.data.Dataset):
    """(original, coarse) window pairs with a training mask, addressed by ``(index, seed)``.

    ``images``/``coarse`` are per-subject arrays ``(X, Y, Z)`` (in memory or memory-mapped
    ``.npy``); ``fractions`` the brain-fraction map of every window position.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        coarse: list[np.ndarray],
        fractions: list[np.ndarray],
        window: int,
        masks: MaskConfig,
        positions: Positions = "stratified",
    ):
        if not images:
            raise ConfigError("no training subjects")
        self.images, self.coarse, self.window, self.masks = images, coarse, window, masks
        self.positions = positions
        self.shapes = [tuple(f.shape) for f in fractions]
        # Flat position indices per brain-fraction bin (empty bins dropped).
        self.bins: list[list[np.ndarray]] = []
        for f in fractions:
            b = np.minimum((f.ravel() * FRACTION_BINS).astype(np.int64), FRACTION_BINS - 1)
            order = np.argsort(b, kind="stable")
            counts = np.bincount(b, minlength=FRACTION_BINS)
            groups = np.split(order, np.cumsum(counts)[:-1])
            self.bins.append([g.astype(np.int64) for g in groups if g.size])

    def __len__(self) -> int:
        return len(self.images)

    def position(self, i: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """Corner of the window for subject ``i``."""
        shape = self.shapes[i]
        if self.positions == "uniform":
            return tuple(int(rng.integers(0, n)) for n in shape)  # type: ignore[return-value]
        groups = self.bins[i]
        g = groups[int(rng.integers(0, len(groups)))]
        flat = int(g[int(rng.integers(0, g.size))])
        return tuple(int(v) for v in np.unravel_index(flat, shape))  # type: ignore[return-value]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key
        rng = np.random.default_rng([int(seed), 7])
        w = self.window
        a, b, c = self.position(i, rng)
        sl = (slice(a, a + w), slice(b, b + w), slice(c, c + w))
        mask = sample_mask((w, w, w), rng, self.masks)
        return {
            "x": torch.from_numpy(np.ascontiguousarray(self.images[i][sl], dtype=np.float32))[None],
            "xhat": torch.from_numpy(np.ascontiguousarray(self.coarse[i][sl], dtype=np.float32))[
                None
            ],
            "mask": torch.from_numpy(mask)[None],
            "seed": torch.tensor(seed),
        }


class RefinerTask:
    """The paper's masked loss: clean known region, noise only where M = 1, loss only there."""

    kind = "refiner"
    DRAWN = ("g", "eps", "t")

    def __init__(self, schedule: NoiseSchedule, target: Target = "image", residual_scale=1.0):
        self.schedule, self.target, self.residual_scale = schedule, target, float(residual_scale)

    def draws(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One sample's known-region noise ``g``, diffusion noise and timestep, from its seed."""
        seed, shape = item["seed"], tuple(item["x"].shape)
        return {
            "g": sample_randn(shape, seed, salt=11),
            "eps": sample_randn(shape, seed, salt=12),
            "t": sample_randint(self.schedule.num_train_timesteps, seed, salt=13),
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, xhat = batch["x"], batch["xhat"]
        if self.target == "residual":
            x = (x - xhat) / self.residual_scale
        m = batch["mask"].to(x.dtype)
        d = batch_draws(self, batch)
        g, eps, t = d["g"].to(x), d["eps"].to(x), d["t"].to(x.device)
        x_t, cond = training_inputs(x, xhat, m, g, self.schedule.add_noise(x, eps, t))
        return Denoiser(model, self.schedule).loss(x, eps, t, cond=cond, mask=m, x_t=x_t)


PATCH_CACHE_FORMAT = "realdeal-patch-cache"


def _cached_arrays(
    ds, ids: list[str], kind: str, cache: Path, write: bool = True
) -> list[np.ndarray]:
    """Per-subject float32 ``.npy`` copies, memory-mapped (fast random patch reads; a gzip
    NIfTI would be decompressed for every patch).

    Each ``<id>_<kind>.npy`` has a ``<id>_<kind>.json`` beside it with the fingerprint
    (:func:`~realdeal.utils.fs.file_fingerprint`) of the NIfTI file it was made from; an entry
    whose file changed since (re-prepared images, new reconstructions) is made again. Entries
    of earlier versions (no record) are kept, and get their record, if written after their file
    last changed, else made again. ``write=False`` (ranks other than 0) only reads: a missing
    or stale entry is then loaded from its NIfTI file into memory."""

    if write:
        cache.mkdir(parents=True, exist_ok=True)
    out = []
    for sid in progress(ids, desc=f"cache {kind}", unit="subject"):
        path, record = cache / f"{sid}_{kind}.npy", cache / f"{sid}_{kind}.json"
        src = ds.image_path(sid) if kind == "images" else ds.derived_path(kind, sid)
        stored = _read_record(record)
        fp = check_fingerprint(src, stored) if path.exists() else None
        if fp is None and stored is None and path.exists() and written_after(path, src):
            fp = file_fingerprint(src)  # an earlier version's entry, made after src changed
        if fp is not None and write and fp is not stored:
            write_json_atomic(record, {"format": PATCH_CACHE_FORMAT, "input": fp})
        if fp is None:
            vol = ds.load_image(sid) if kind == "images" else ds.load_derived(kind, sid)
            data = vol.data.astype(np.float32)
            if not write:
                out.append(data)
                continue
            fp = file_fingerprint(src)
            record.unlink(missing_ok=True)  # no record names the entry while it changes
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, data)
            write_json_atomic(record, {"format": PATCH_CACHE_FORMAT, "input": fp})
        out.append(np.load(path, mmap_mode="r"))
    return out


def _read_record(path: Path) -> dict | None:
    """The input fingerprint a patch-cache record holds (None if there is no such record)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != PATCH_CACHE_FORMAT:
        return None
    return data.get("input") if isinstance(data.get("input"), dict) else None


def measure_residual_scale(ds, ids: list[str], coarse: str = "reconstructions") -> float:
    """Standard deviation of ``x − x̂`` over the brain voxels of subjects ``ids``."""
    total = total_sq = 0.0
    n = 0
    for sid in ids:
        m = ds.load_mask(sid)
        r = (ds.load_image(sid).data - ds.load_derived(coarse, sid).data)[m].astype(np.float64)
        total, total_sq, n = total + r.sum(), total_sq + (r * r).sum(), n + r.size
    if n == 0:
        raise InputError(ds.root, "has no brain voxels in the training subjects")
    var = total_sq / n - (total / n) ** 2
    if not var > 0:
        raise InputError(ds.root, f"the {coarse} equal the images; there is nothing to refine")
    return float(np.sqrt(var))


def training_ids(ds, cfg: RefinerRunConfig) -> list[str]:
    """The train split of prepared dataset ``ds``, refused in one line if it is empty, lacks the
    coarse volumes ``cfg`` trains from, or is smaller than ``cfg``'s window."""
    ids = ds.ids("train")
    if not ids:
        raise InputError(ds.root, "has no subjects in the train split")
    if cfg.coarse == "reconstructions":
        require_reconstructions(ds, ids)
    if any(s < cfg.window for s in ds.shape):
        raise ConfigError(f"window {cfg.window} does not fit the dataset grid {ds.shape}")
    return ids


def train_refiner(
    cfg: RefinerRunConfig, data: str | Path, out_dir: str | Path, resume: bool = False
) -> TrainResult:
    """Train the refiner on the train split of a prepared dataset with reconstructions."""

    out_dir = Path(out_dir)
    ds = PreparedDataset(data)
    ids = training_ids(ds, cfg)
    dist = init_distributed(cfg.train.device)
    same = {"image_shape": list(ds.shape), "window": cfg.window}
    inputs = {"dataset": dataset_fingerprint(ds)}
    with open_run(out_dir, "refiner", cfg, resume=resume, dist=dist, same=same,
                  inputs=inputs) as state:  # fmt: skip
        if cfg.residual_scale is None and state.stored("residual_scale") is not None:
            # resumed: the scale the run measured when it started, not a new measurement
            cfg = dataclasses.replace(cfg, residual_scale=float(state.stored("residual_scale")))
        if dist.is_main:
            save_config(cfg, out_dir / CONFIG_NAME)
        return _train(cfg, ds, ids, out_dir, resume, dist)


def patch_pairs(cfg: RefinerRunConfig, ds, ids: list[str], out_dir: Path, dist) -> PatchPairs:
    """The training pairs of subjects ``ids`` for ``cfg``, from the patch cache in
    ``out_dir/patch-cache`` (rank 0 fills it; the other ranks read it after a barrier)."""
    cache = out_dir / "patch-cache"
    if dist.is_main:
        images = _cached_arrays(ds, ids, "images", cache)
        coarse = _cached_arrays(ds, ids, cfg.coarse, cache)
    barrier(dist)
    if not dist.is_main:  # after rank 0 made the entries
        images = _cached_arrays(ds, ids, "images", cache, write=False)
        coarse = _cached_arrays(ds, ids, cfg.coarse, cache, write=False)
    fractions = [
        ds.load_fraction(s)
        if ds.window == cfg.window
        else brain_fraction_map(ds.load_mask(s), cfg.window)
        for s in ids
    ]
    return PatchPairs(images, coarse, fractions, cfg.window, cfg.masks, cfg.positions)


def _train(cfg: RefinerRunConfig, ds, ids, out_dir: Path, resume: bool, dist) -> TrainResult:
    pairs = patch_pairs(cfg, ds, ids, out_dir, dist)
    log.info(
        "refiner: %d training subjects, %d³ windows, %s positions",
        len(ids),
        cfg.window,
        cfg.positions,
    )
    if cfg.target == "residual" and cfg.residual_scale is None:
        cfg = dataclasses.replace(cfg, residual_scale=measure_residual_scale(ds, ids, cfg.coarse))
        log.info("refiner: residual scale %.4g (std of x − x̂ in the brain)", cfg.residual_scale)
        if dist.is_main:
            save_config(cfg, out_dir / CONFIG_NAME)
    seed_everything(cfg.train.seed)
    model = build_unet(cfg.unet)
    extra = {
        "window": cfg.window,
        "image_shape": list(ds.shape),
        "spacing": list(ds.spacing),
        "scaler": ds.scaler.to_dict(),
        "dataset": str(ds.root),
    }
    return train(
        RefinerTask(NoiseSchedule(cfg.schedule), cfg.target, cfg.residual_scale or 1.0),
        model,
        pairs,
        cfg.train,
        out_dir,
        run_config=to_dict(cfg),
        model_config=to_dict(cfg.unet),
        preset=cfg.preset,
        resume=resume,
        extra=extra,
        dist=dist,
    )
