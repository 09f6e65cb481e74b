"""Stage-2 training: latent diffusion on the autoencoder's scaled training latents."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from realdeal.config import save_config, to_dict
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError, InputError
from realdeal.models.latent_scaling import LatentScaler
from realdeal.models.loading import load_autoencoder
from realdeal.models.unet import build_unet
from realdeal.pipelines.autoencoder import (
    checkpoint_fingerprint,
    encode_dataset,
    latents_fingerprint,
    read_latents,
)
from realdeal.presets import LDMRunConfig
from realdeal.runtime.checkpoint import EmbeddedAutoencoder
from realdeal.runtime.rng import batch_draws, sample_randint, sample_randn, seed_everything
from realdeal.training.distributed import barrier, init_distributed
from realdeal.training.engine import TrainResult, train
from realdeal.training.run_folder import CONFIG_NAME, dataset_fingerprint, open_run

log = logging.getLogger(__name__)


class LatentItems(torch.utils.data.Dataset):
    """Scaled latents ``(N, C, x, y, z)`` in [-1, 1], addressed by ``(index, seed)``."""

    def __init__(self, latents: torch.Tensor):
        self.latents = latents

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key
        return {"z": self.latents[i], "seed": torch.tensor(seed)}


class LatentDiffusionTask:
    """Diffusion loss ‖f(z_t, t) − target‖² with per-sample noise and timestep."""

    kind = "ldm"
    DRAWN = ("noise", "t")

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule

    def draws(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One sample's noise and timestep, from its seed alone."""
        seed = item["seed"]
        return {
            "noise": sample_randn(tuple(item["z"].shape), seed, salt=1),
            "t": sample_randint(self.schedule.num_train_timesteps, seed, salt=2),
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        z = batch["z"]
        d = batch_draws(self, batch)
        return Denoiser(model, self.schedule).loss(z, d["noise"].to(z), d["t"].to(z.device))


def train_ldm(
    cfg: LDMRunConfig,
    data: str | Path,
    autoencoder: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    latents: str | Path | None = None,
) -> TrainResult:
    """Train the latent diffusion U-Net on the train split of ``data`` encoded by ``autoencoder``.

    Latents are cached in ``out_dir/latents`` (an entry is reused while its image file and the
    autoencoder file are the same, see :func:`~realdeal.pipelines.autoencoder.encode_dataset`);
    with ``latents`` (a folder of ``<id>.safetensors`` made by this autoencoder, e.g. by
    ``realdeal encode``) the run reads them from there instead and needs no images: ``data``
    then only names the split and the image grid (its ``dataset.json``), and a resumed run
    must read the same latents;
    the latent scaling fitted on them and the autoencoder's EMA weights are stored in the
    LDM checkpoint, so sampling needs only that one file. Nothing is written before
    :func:`~realdeal.training.run_folder.open_run` accepted the run; a resumed run must use
    the dataset and the autoencoder it was trained with.
    """
    from realdeal.data.dataset import PreparedDataset

    out_dir = Path(out_dir)
    ds = PreparedDataset(data)
    ids = ds.ids("train")
    if not ids:
        raise InputError(ds.root, "has no subjects in the train split")
    dist = init_distributed(cfg.train.device)
    ae, ae_ckpt = load_autoencoder(autoencoder, dist.device)
    if (
        cfg.unet.in_channels != ae.config.latent_channels
        or cfg.unet.out_channels != ae.config.latent_channels
    ):
        raise ConfigError(
            f"U-Net in/out channels must equal the autoencoder's {ae.config.latent_channels} latent channels"
        )
    f, m = ae.config.downsampling, cfg.unet.size_multiple
    latent_size = tuple(-(-s // f) for s in ds.shape)  # the encoder pads to multiples of f
    if any(s % m for s in latent_size):
        raise ConfigError(
            f"latent size {latent_size} must be divisible by {m} for a {len(cfg.unet.channels)}-level U-Net"
        )
    fingerprint = checkpoint_fingerprint(autoencoder)
    same = {"autoencoder.fingerprint": fingerprint, "image_shape": list(ds.shape)}
    inputs = {"dataset": dataset_fingerprint(ds), "autoencoder": fingerprint}
    if latents is not None:
        given = read_latents(latents, ids, fingerprint, (ae.config.latent_channels, *latent_size))
        inputs["latents"] = latents_fingerprint(latents, ids)
    with open_run(out_dir, "ldm", cfg, resume=resume, dist=dist, same=same, inputs=inputs):
        if latents is not None:
            if dist.is_main:
                save_config(cfg, out_dir / CONFIG_NAME)
            log.info("ldm: %d training latents read from %s", len(given), latents)
            scaler = LatentScaler.fit(given.values())
            return _train(
                cfg, ds, ids, given, scaler, ae, ae_ckpt, fingerprint, out_dir, resume, dist
            )
        if dist.is_main:
            save_config(cfg, out_dir / CONFIG_NAME)
            encode_dataset(
                ae, ds, ids, out_dir / "latents", dist.device, autoencoder_id=fingerprint,
                train_ids=ids,
            )  # fmt: skip
        barrier(dist)
        latents = encode_dataset(
            ae, ds, ids, out_dir / "latents", dist.device, autoencoder_id=fingerprint,
            train_ids=ids, write=False,
        )  # fmt: skip
        scaler = LatentScaler.fit(latents.values())
        return _train(
            cfg, ds, ids, latents, scaler, ae, ae_ckpt, fingerprint, out_dir, resume, dist
        )


def _train(cfg, ds, ids, latents, scaler, ae, ae_ckpt, fingerprint, out_dir, resume, dist):
    stacked = scaler.forward(torch.stack([latents[s] for s in ids]))
    log.info("ldm: %d training latents of shape %s", len(ids), tuple(stacked.shape[1:]))
    seed_everything(cfg.train.seed)
    model = build_unet(cfg.unet)
    extra = {
        "latent_scaling": scaler.to_dict(),
        "latent_shape": list(stacked.shape[1:]),
        "image_shape": list(ds.shape),
        "dataset": str(ds.root),
        "autoencoder": EmbeddedAutoencoder(
            model_config=ae_ckpt.model_config,
            preset=ae_ckpt.preset,
            ema=ae.state_dict(),
            fingerprint=fingerprint,
        ),
    }
    return train(
        LatentDiffusionTask(NoiseSchedule(cfg.schedule)),
        model,
        LatentItems(stacked),
        cfg.train,
        out_dir,
        run_config=to_dict(cfg),
        model_config=to_dict(cfg.unet),
        preset=cfg.preset,
        resume=resume,
        extra=extra,
        dist=dist,
    )
