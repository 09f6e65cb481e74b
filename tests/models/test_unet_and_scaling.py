"""MONAI U-Net builder and the per-channel latent scaling."""

from __future__ import annotations

import pytest
import torch

from realdeal.errors import ConfigError
from realdeal.models.latent_scaling import OFFICIAL_RANGES, LatentScaler
from realdeal.models.unet import UNetConfig, build_unet, count_parameters

TINY = UNetConfig(
    channels=(8, 16, 16),
    num_res_blocks=1,
    attention_levels=(False, False, True),
    num_head_channels=(0, 0, 16),
    norm_num_groups=8,
)


def test_unet_builds_and_starts_at_zero_output():
    torch.manual_seed(0)
    net = build_unet(TINY)
    out = net(torch.randn(2, 4, 8, 8, 12), torch.tensor([3, 900]))
    assert out.shape == (2, 4, 8, 8, 12)
    # MONAI zero-initialises the output conv (docs/method.md#spec-8)
    assert torch.count_nonzero(out) == 0


def test_paper_unet_arguments():
    cfg = UNetConfig()
    assert cfg.channels == (256, 512, 768) and cfg.attention_levels == (False, True, True)
    assert cfg.num_head_channels == (0, 512, 768) and cfg.num_res_blocks == 2
    assert cfg.in_channels == cfg.out_channels == 4


def test_unet_config_validation():
    with pytest.raises(ConfigError):
        UNetConfig(
            channels=(8, 16), attention_levels=(False, False, True), num_head_channels=(0, 0, 8)
        )
    with pytest.raises(ConfigError, match="divisible"):
        UNetConfig(
            channels=(10, 16, 16),
            norm_num_groups=8,
            num_head_channels=(0, 0, 16),
            attention_levels=(False, False, True),
        )
    assert count_parameters(build_unet(TINY)) > 0


def test_latent_scaling_round_trip_and_range():
    g = torch.Generator().manual_seed(0)
    lats = [torch.rand(4, 3, 3, 3, generator=g) * 0.5 + 0.2 for _ in range(5)]
    s = LatentScaler.fit(lats)
    allz = torch.stack(lats)
    scaled = s.forward(allz)
    assert scaled.min() == pytest.approx(-1, abs=1e-6) and scaled.max() == pytest.approx(
        1, abs=1e-6
    )
    for c in range(4):  # each channel spans [-1, 1] on its own
        assert scaled[:, c].min() == pytest.approx(-1, abs=1e-6) and scaled[
            :, c
        ].max() == pytest.approx(1, abs=1e-6)
    torch.testing.assert_close(s.inverse(scaled), allz)
    torch.testing.assert_close(s.forward(lats[0]), scaled[0])  # (C, ...) as well as (B, C, ...)
    assert LatentScaler.from_dict(s.to_dict()) == s


def test_official_ranges_map_to_unit_interval():
    s = LatentScaler(tuple(r[0] for r in OFFICIAL_RANGES), tuple(r[1] for r in OFFICIAL_RANGES))
    z = torch.tensor([0.2, 0.1, 0.1, 0.2]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(s.forward(z), -torch.ones_like(z))
    with pytest.raises(ConfigError):
        s.forward(torch.zeros(1, 3, 1, 1, 1))
