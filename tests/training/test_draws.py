"""Per-sample random draws made with each item (in the data workers) are the numbers the task
would draw for the batch itself: moving them out of the training step changes nothing."""

from __future__ import annotations

import numpy as np
import torch

from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.inference.masks import MaskConfig
from realdeal.runtime.rng import batch_draws, per_sample_randint, per_sample_randn
from realdeal.training.engine import _collate, _WithDraws
from realdeal.training.ldm import LatentDiffusionTask, LatentItems
from realdeal.training.refiner import PatchPairs, RefinerTask

SEEDS = [3, 17, 2**40 + 5]


class Probe(torch.nn.Module):
    """Stands in for a U-Net: the first ``c`` input channels, halved."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.c = c

    def forward(self, x, timesteps=None, **kw):
        return x[:, : self.c] * 0.5


def _batches(dataset, task):
    plain = _collate([dataset[(i % len(dataset), s)] for i, s in enumerate(SEEDS)])
    drawn = _WithDraws(dataset, task.draws)
    with_draws = _collate([drawn[(i % len(dataset), s)] for i, s in enumerate(SEEDS)])
    return plain, with_draws


def test_ldm_draws_in_the_items_equal_the_batch_draws_and_the_old_per_batch_ones():
    task = LatentDiffusionTask(NoiseSchedule(ScheduleConfig()))
    ds = LatentItems(torch.randn(2, 4, 6, 8, 6))
    plain, with_draws = _batches(ds, task)
    assert "noise" not in plain and {"noise", "t"} <= set(with_draws)
    by_hand = batch_draws(task, plain)
    seeds = torch.tensor(SEEDS)
    assert torch.equal(with_draws["noise"], by_hand["noise"])
    assert torch.equal(with_draws["noise"], per_sample_randn((4, 6, 8, 6), seeds, salt=1))
    assert torch.equal(with_draws["t"], per_sample_randint(1000, seeds, salt=2))
    assert torch.equal(task.loss(Probe(), plain), task.loss(Probe(), with_draws))


def test_refiner_draws_in_the_items_equal_the_batch_draws():
    task = RefinerTask(NoiseSchedule(ScheduleConfig()), "residual", residual_scale=0.5)
    rng = np.random.default_rng(0)
    img = [rng.standard_normal((12, 12, 12)).astype(np.float32) for _ in range(2)]
    fr = [np.full((5, 5, 5), 0.5, np.float32) for _ in range(2)]
    ds = PatchPairs(img, [i * 0.5 for i in img], fr, window=8, masks=MaskConfig())
    plain, with_draws = _batches(ds, task)
    seeds = torch.tensor(SEEDS)
    for key, salt in (("g", 11), ("eps", 12)):
        assert torch.equal(with_draws[key], per_sample_randn((1, 8, 8, 8), seeds, salt=salt))
    assert torch.equal(with_draws["t"], per_sample_randint(1000, seeds, salt=13))

    assert torch.equal(task.loss(Probe(1), plain), task.loss(Probe(1), with_draws))
