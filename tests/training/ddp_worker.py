"""Run by ``torchrun --nproc_per_node=2`` from test_ddp.py: train the toy model, dump weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config, toy_model

from realdeal.training.distributed import cleanup, init_distributed
from realdeal.training.engine import train

if __name__ == "__main__":
    out = Path(sys.argv[1])
    dist = init_distributed("cpu")
    model = toy_model()
    train(
        ToyTask(),
        model,
        ToyData(),
        toy_config(steps=4, checkpoint_every=2),
        out,
        run_config={},
        model_config=MODEL_CONFIG,
        dist=dist,
    )
    torch.save(model.state_dict(), out / f"rank{dist.rank}.pt")
    cleanup()
