"""Run by ``torchrun --nproc_per_node=4`` from test_ddp.py: train a toy model whose gradients
become ready in another order than its parameters are registered (so DDP lays out its buckets
anew after the first step), to ``STEPS``, resuming from ``OUT``'s checkpoint when asked."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config
from torch import nn

from realdeal.training.distributed import cleanup, init_distributed
from realdeal.training.engine import train


class Swapped(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.last = nn.Conv3d(8, 1, 3, padding=1)  # registered first, used last
        self.first = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
            nn.Conv3d(8, 8, 3, padding=1), nn.SiLU(),
        )  # fmt: skip

    def forward(self, x):
        return self.last(self.first(x))


if __name__ == "__main__":
    out, steps, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "resume"
    dist = init_distributed("cpu")
    model = Swapped()
    train(
        ToyTask(),
        model,
        ToyData(n=16),
        toy_config(steps=steps, checkpoint_every=3, batch_size=8),
        out,
        run_config={},
        model_config=MODEL_CONFIG,
        dist=dist,
        resume=resume,
    )
    torch.save(model.state_dict(), out / f"rank{dist.rank}.pt")
    cleanup()
