"""A tiny model, dataset and task for engine tests (also run under torchrun by test_ddp)."""

from __future__ import annotations

import torch
from torch import nn

from realdeal.runtime.rng import per_sample_randn
from realdeal.training.engine import TrainConfig


class ToyData(torch.utils.data.Dataset):
    """``n`` fixed random volumes ``(1, 8, 8, 8)``, addressed by ``(index, seed)``."""

    def __init__(self, n: int = 6):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 1, 8, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key
        return {"x": self.x[i], "seed": torch.tensor(seed)}


class ToyTask:
    """Denoise ``x + 0.3 ε`` back to ``x``, with per-sample noise from the sample's seed."""

    kind = "autoencoder"

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"]
        noise = per_sample_randn(tuple(x.shape[1:]), batch["seed"]).to(x)
        return ((model(x + 0.3 * noise) - x) ** 2).mean()


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv3d(4, 1, 3, padding=1)
    )


def toy_config(**kw) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=4,
        lr=1e-2,
        precision="fp32",
        log_every=1,
        checkpoint_every=2,
        ema_decay=0.9,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


MODEL_CONFIG = {"name": "toy", "width": 4}
