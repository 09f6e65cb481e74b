"""Stage-1 training: the autoencoder's task, its volume dataset and ``train_autoencoder``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from realdeal.config import save_config, to_dict
from realdeal.errors import ConfigError, InputError
from realdeal.models.autoencoder import Autoencoder
from realdeal.presets import AutoencoderRunConfig
from realdeal.runtime.rng import generator_for, seed_everything
from realdeal.training.distributed import init_distributed
from realdeal.training.engine import TrainResult, train
from realdeal.training.run_folder import CONFIG_NAME, dataset_fingerprint, open_run

log = logging.getLogger(__name__)


class VolumeItems(torch.utils.data.Dataset):
    """Training volumes ``(1, X, Y, Z)`` in [-1, 1], whole or as a random crop.

    ``load(sid)`` returns the ``(X, Y, Z)`` float array of subject ``sid``. Items are
    addressed by ``(index, seed)``; the crop position is drawn from ``seed`` alone.
    """

    def __init__(
        self,
        load: Callable[[str], np.ndarray],
        ids: Sequence[str],
        crop: tuple[int, int, int] | None = None,
        cache: bool = False,
    ):
        self.load, self.ids, self.crop = load, list(ids), crop
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.ids)

    def _volume(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        v = torch.from_numpy(np.ascontiguousarray(self.load(self.ids[i]), dtype=np.float32))
        if self._cache is not None:
            self._cache[i] = v
        return v

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key
        v = self._volume(i)
        if self.crop is not None:
            if any(c > s for c, s in zip(self.crop, v.shape, strict=True)):
                raise ConfigError(f"crop {self.crop} is larger than the volume {tuple(v.shape)}")
            g = generator_for(seed)
            o = [
                int(torch.randint(0, s - c + 1, (1,), generator=g))
                for c, s in zip(self.crop, v.shape, strict=True)
            ]
            v = v[
                o[0] : o[0] + self.crop[0], o[1] : o[1] + self.crop[1], o[2] : o[2] + self.crop[2]
            ]
        return {"x": v[None].contiguous(), "seed": torch.tensor(seed)}


class AutoencoderTask:
    """Reconstruction loss ‖D(E(x)) − x‖ (MSE or L1) over the whole (cropped) volume."""

    kind = "autoencoder"

    def __init__(self, loss: str = "mse"):
        if loss not in ("mse", "l1"):
            raise ConfigError(f"autoencoder loss must be mse or l1, got {loss!r}")
        self.loss_name = loss

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"]
        recon = model(x).float()
        return (
            F.mse_loss(recon, x.float()) if self.loss_name == "mse" else F.l1_loss(recon, x.float())
        )


def train_autoencoder(
    cfg: AutoencoderRunConfig, data: str | Path, out_dir: str | Path, resume: bool = False
) -> TrainResult:
    """Train the stage-1 autoencoder on the ``train`` split of prepared dataset ``data``.

    Writes ``out_dir/checkpoint.pt`` (with EMA weights, used by ``reconstruct``/``encode``),
    ``config.json`` and ``metrics.jsonl``, after :func:`~realdeal.training.run_folder.open_run`
    decided that it may (nothing is written for a refused run).
    """
    from realdeal.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    ids = ds.ids("train")
    if not ids:
        raise InputError(ds.root, "has no subjects in the train split")
    shape = tuple(ds.shape)
    f = cfg.model.downsampling
    train_shape = cfg.crop or shape
    if any(s % f for s in train_shape):
        raise ConfigError(f"training volumes {train_shape} must be divisible by {f}; set --crop")
    dist = init_distributed(cfg.train.device)
    with open_run(out_dir, "autoencoder", cfg, resume=resume, dist=dist,
                  same={"image_shape": list(shape)},
                  inputs={"dataset": dataset_fingerprint(ds)}):  # fmt: skip
        if dist.is_main:
            save_config(cfg, Path(out_dir) / CONFIG_NAME)
        return _train(cfg, ds, ids, shape, out_dir, resume, dist)


def _train(cfg, ds, ids, shape, out_dir, resume, dist) -> TrainResult:
    seed_everything(cfg.train.seed)
    model = Autoencoder(cfg.model)
    log.info(
        "autoencoder: %d training subjects, volumes %s, %s",
        len(ids),
        shape,
        f"crops {cfg.crop}" if cfg.crop else "whole volumes",
    )
    items = VolumeItems(lambda sid: ds.load_image(sid).data, ids, cfg.crop, cfg.cache_volumes)
    return train(
        AutoencoderTask(cfg.loss),
        model,
        items,
        cfg.train,
        out_dir,
        run_config=to_dict(cfg),
        model_config=to_dict(cfg.model),
        preset=cfg.preset,
        resume=resume,
        extra={"image_shape": list(shape), "dataset": str(ds.root)},
        dist=dist,
    )
