"""The stage-1 autoencoder: shapes, ranges, a correct residual block, the compat switch."""

from __future__ import annotations

import pytest
import torch

from realdeal.errors import ConfigError
from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig, ResBlock, latent_shape

SMALL = AutoencoderConfig(channels=(4, 8, 4), bottleneck=4)


def test_shapes_and_value_ranges():
    torch.manual_seed(0)
    ae = Autoencoder(SMALL).eval()
    x = torch.rand(2, 1, 16, 20, 12) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 4, 5, 3) == (2, *latent_shape((16, 20, 12), SMALL))
    assert z.min() > 0 and z.max() < 1  # sigmoid latent
    y = ae.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_paper_widths_match_spec():
    ae = Autoencoder(AutoencoderConfig())
    convs = [m for m in ae.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    # stem 1→64, res 64, down 64→128, res 128, down 128→64, res 64, 1×1 64→32, 1×1 32→4
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (1, 64),
        (64, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 128),
        (128, 64),
        (64, 64),
        (64, 64),
        (64, 32),
        (32, 4),
    ]
    assert convs[-1].kernel_size == (1, 1, 1) and convs[-2].kernel_size == (1, 1, 1)


def test_residual_block_uses_its_first_convolution():
    """Correct block: changing conv1 changes the output. Official defect: it does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6, 6)
    for defect, should_change in ((False, True), (True, False)):
        blk = ResBlock(4, norm="none", defect=defect)
        before = blk(x)
        with torch.no_grad():
            blk.conv1.weight.add_(torch.randn_like(blk.conv1.weight))
        changed = not torch.allclose(before, blk(x))
        assert changed is should_change


def test_residual_block_reference():
    """Against an independent functional formula."""
    torch.manual_seed(1)
    blk = ResBlock(3, norm="none", negative_slope=0.2)
    x = torch.randn(2, 3, 5, 5, 5)
    f = torch.nn.functional
    h = f.leaky_relu(f.conv3d(x, blk.conv1.weight, blk.conv1.bias, padding=1), 0.2)
    ref = f.leaky_relu(x + f.conv3d(h, blk.conv2.weight, blk.conv2.bias, padding=1), 0.2)
    torch.testing.assert_close(blk(x), ref)


def test_bad_input_shape_is_a_clear_error():
    ae = Autoencoder(SMALL)
    with pytest.raises(ConfigError, match="divisible by 4"):
        ae.encode(torch.zeros(1, 1, 10, 12, 12))
    with pytest.raises(ConfigError):
        AutoencoderConfig(channels=(0, 8, 4))


@pytest.mark.slow
def test_a_few_steps_learn_to_reconstruct():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(channels=(4, 8, 8), bottleneck=4, norm="group"))
    x = torch.tanh(
        torch.randn(2, 1, 1, 1, 1) + torch.linspace(-2, 2, 16).view(1, 1, 16, 1, 1)
    ).expand(2, 1, 16, 16, 16)
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = ((ae(x) - x) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
