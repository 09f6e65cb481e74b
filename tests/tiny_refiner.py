"""A tiny refiner checkpoint and small coarse volumes for refine tests (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthetic import save_nifti

WINDOW = 8


def tiny_refiner_checkpoint(path: Path, target: str = "residual", window: int = WINDOW) -> Path:
    """A refiner checkpoint with a 2-level, 8-channel U-Net, ``window``³ windows and no spacing or
    scaler (so inputs in [−1, 1] of any voxel size are accepted)."""
    from realdeal.config import to_dict
    from realdeal.diffusion.schedule import ScheduleConfig
    from realdeal.models.unet import UNetConfig, build_unet
    from realdeal.presets import RefinerRunConfig
    from realdeal.runtime.checkpoint import RefinerCheckpoint, save_checkpoint

    unet = UNetConfig(in_channels=3, out_channels=1, channels=(8, 8), num_res_blocks=1,
                      attention_levels=(False, False), num_head_channels=(0, 8),
                      norm_num_groups=4)  # fmt: skip
    run = RefinerRunConfig(
        preset="cpu-small", window=window, unet=unet, target=target, residual_scale=0.2,
        schedule=ScheduleConfig(schedule="scaled_linear_beta", prediction_type="v_prediction"),
    )  # fmt: skip
    torch.manual_seed(0)
    net = build_unet(unet)
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output layer
            p.add_(0.05 * torch.randn_like(p))
    state = net.state_dict()
    return save_checkpoint(path, RefinerCheckpoint(
        preset="cpu-small", config=to_dict(run), model_config=to_dict(unet),
        model=state, ema=state, window=window,
    ))  # fmt: skip


def coarse_volumes(folder: Path, n: int = 3) -> list[Path]:
    """``n`` small coarse 'brains' in [−1, 1] of different shapes, as NIfTI files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        shape = (16 + 2 * i, 18, 16 - i)
        idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
        d = np.sqrt((((idx - np.array(shape) / 2) / (np.array(shape) * 0.35)) ** 2).sum(-1))
        x = np.where(d < 1, 0.3 - 0.4 * d + 0.05 * i, -1.0).astype(np.float32)
        paths.append(save_nifti(folder / f"v{i}.nii.gz", x))
    return paths
