"""A tiny LDM checkpoint (random weights) for sampling tests."""

from __future__ import annotations

from pathlib import Path


def tiny_ldm_checkpoint(tmp_path: Path) -> Path:
    """An LDM checkpoint with random weights (tiny U-Net and autoencoder) whose geometry comes
    from a prepared dataset of two phantoms on a 24×32×24 grid."""
    import torch

    from realdeal.config import to_dict
    from realdeal.data.dataset import PrepareConfig, prepare_dataset
    from realdeal.diffusion.schedule import ScheduleConfig
    from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig
    from realdeal.models.unet import UNetConfig, build_unet
    from realdeal.runtime.checkpoint import EmbeddedAutoencoder, LDMCheckpoint, save_checkpoint

    from synthetic import phantom, save_nifti

    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        save_nifti(raw / f"s{i}_T1w.nii.gz", phantom(seed=i)[0])
    root = tmp_path / "prepared"
    prepare_dataset(str(raw / "*_T1w.nii.gz"), root, PrepareConfig(shape=(24, 32, 24), window=8))
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(channels=(4, 8, 8), bottleneck=4)).eval()
    unet = UNetConfig(in_channels=4, out_channels=4, channels=(8, 8), num_res_blocks=1,
                      attention_levels=(False, False), num_head_channels=(0, 8),
                      norm_num_groups=4)  # fmt: skip
    net = build_unet(unet)
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output layer
            p.add_(0.05 * torch.randn_like(p))
    state = net.state_dict()
    return save_checkpoint(tmp_path / "ldm.pt", LDMCheckpoint(
        preset="cpu-small", config={"schedule": to_dict(ScheduleConfig())},
        model_config=to_dict(unet), model=state, ema=state,
        autoencoder=EmbeddedAutoencoder(model_config=to_dict(ae.config), ema=ae.state_dict()),
        latent_scaling={"lo": [0.0] * 4, "hi": [1.0] * 4},
        latent_shape=(4, 6, 8, 6), dataset=str(root),
    ))  # fmt: skip
