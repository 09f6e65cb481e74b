"""Refiner training data and loss (docs/method.md#spec-5): positions, masks, clean known region,
masked loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realdeal.data.fraction import brain_fraction_map
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.inference.masks import MaskConfig
from realdeal.training.refiner import FRACTION_BINS, PatchPairs, RefinerTask


def _subject(shape=(24, 20, 22), w=8):
    x = -np.ones(shape, np.float32)
    x[4:18, 3:15, 5:17] = np.random.default_rng(0).uniform(0, 1, (14, 12, 12))
    coarse = np.where(x > -1, 0.5, -1).astype(np.float32)
    return x, coarse, brain_fraction_map(x > -1, w)


def test_stratified_positions_cover_every_nonempty_bin_evenly():
    x, c, f = _subject()
    ds = PatchPairs([x], [c], [f], 8, MaskConfig(), "stratified")
    fr = [f[ds.position(0, np.random.default_rng(s))] for s in range(3000)]
    bins = np.minimum((np.array(fr) * FRACTION_BINS).astype(int), FRACTION_BINS - 1)
    present = np.unique(np.minimum((f.ravel() * FRACTION_BINS).astype(int), FRACTION_BINS - 1))
    counts = np.bincount(bins, minlength=FRACTION_BINS)[present]
    assert set(np.unique(bins)) == set(present)  # empty bins never drawn, non-empty all drawn
    assert counts.min() > 0.6 * counts.mean()  # roughly equal weight per bin
    uni = PatchPairs([x], [c], [f], 8, MaskConfig(), "uniform")
    pos = np.array([uni.position(0, np.random.default_rng(s)) for s in range(2000)])
    assert (pos.min(0) == 0).all() and (pos.max(0) == np.array(f.shape) - 1).all()


def test_items_are_deterministic_per_seed_and_aligned():
    x, c, f = _subject()
    ds = PatchPairs([x], [c], [f], 8, MaskConfig(), "stratified")
    a, b, other = ds[(0, 5)], ds[(0, 5)], ds[(0, 6)]
    for k in ("x", "xhat", "mask"):
        assert torch.equal(a[k], b[k])
    assert a["x"].shape == (1, 8, 8, 8) and a["mask"].dtype == torch.bool
    assert not (torch.equal(a["x"], other["x"]) and torch.equal(a["mask"], other["mask"]))
    # x̂ is the coarse volume at the same window as x: brain where x is brain.
    assert torch.equal(a["xhat"] > -1, a["x"] > -1)


def test_loss_sees_clean_known_region_and_counts_only_masked_voxels():
    schedule = NoiseSchedule(
        ScheduleConfig(schedule="scaled_linear_beta", prediction_type="epsilon")
    )
    task = RefinerTask(schedule)
    w = 8
    x = torch.rand(2, 1, w, w, w) * 2 - 1
    m = torch.zeros(2, 1, w, w, w, dtype=torch.bool)
    m[:, :, : w // 2] = True  # generate the left half, know the right half
    batch = {"x": x, "xhat": x * 0.5, "mask": m, "seed": torch.tensor([3, 4])}
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self, junk_in_known: float):
            super().__init__()
            self.junk = junk_in_known

        def forward(self, inp, t):
            seen["inp"] = inp.clone()
            out = torch.zeros_like(inp[:, :1])
            out[~m] = self.junk  # arbitrary output where M = 0 must not matter
            return out

    l0 = task.loss(Probe(0.0), batch)
    l1 = task.loss(Probe(123.0), batch)
    assert torch.isclose(l0, l1)
    inp = seen["inp"]
    x_t, xhat, y_prev = inp[:, :1], inp[:, 1:2], inp[:, 2:3]
    assert torch.equal(x_t[~m], x[~m])  # known region clean in x_t
    assert torch.equal(y_prev[~m], x[~m])  # y_prev = x on the known region
    assert torch.equal(xhat, x * 0.5)
    assert not torch.allclose(y_prev[m], x[m])  # noise where M = 1
    # A zero prediction's loss is the mean of ε² over the generated voxels (≈ 1).
    assert 0.7 < float(l0) < 1.3


def test_residual_target_diffuses_the_scaled_residual():
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    w = 8
    x = torch.rand(2, 1, w, w, w) * 2 - 1
    xhat = x * 0.5
    m = torch.zeros(2, 1, w, w, w, dtype=torch.bool)
    m[:, :, : w // 2] = True
    batch = {"x": x, "xhat": xhat, "mask": m, "seed": torch.tensor([3, 4])}
    seen = {}

    def probe(inp, t):
        seen["inp"] = inp.clone()
        return torch.zeros_like(inp[:, :1])

    RefinerTask(schedule, "residual", residual_scale=0.25).loss(probe, batch)
    x_t, y_prev = seen["inp"][:, :1], seen["inp"][:, 2:3]
    r = (x - xhat) / 0.25
    assert torch.allclose(x_t[~m], r[~m]) and torch.allclose(y_prev[~m], r[~m])
    assert torch.equal(seen["inp"][:, 1:2], xhat)  # the coarse channel stays in image space


def test_measured_residual_scale_is_the_brain_std(tmp_path):
    from realdeal.training.refiner import measure_residual_scale

    rng = np.random.default_rng(0)
    images = {s: rng.normal(size=(6, 6, 6)).astype(np.float32) for s in "ab"}

    class FakeDs:
        root = tmp_path
        img = images

        def load_mask(self, sid):
            m = np.zeros((6, 6, 6), bool)
            m[1:5, 1:5, 1:5] = True
            return m

        def load_image(self, sid):
            return type("V", (), {"data": self.img[sid]})

        def load_derived(self, kind, sid):
            return type("V", (), {"data": self.img[sid] * 0.5})

    ds = FakeDs()
    m = ds.load_mask("a")
    expect = np.concatenate([(0.5 * ds.img[s])[m] for s in "ab"]).std()
    assert measure_residual_scale(ds, ["a", "b"]) == pytest.approx(expect, rel=1e-6)
    FakeDs.load_derived = lambda self, kind, sid: type("V", (), {"data": self.img[sid]})
    with pytest.raises(Exception, match="nothing to refine"):
        measure_residual_scale(FakeDs(), ["a"])


@pytest.mark.parametrize("preset", ["paper", "cpu-small"])
def test_presets_build_a_refiner_unet_of_the_right_shape(preset):
    from realdeal.models.unet import build_unet, count_parameters
    from realdeal.presets import preset as get_preset

    cfg = get_preset("refiner", preset)
    net = build_unet(cfg.unet)
    n = count_parameters(net)
    if preset == "paper":
        assert cfg.window == 64 and cfg.unet.channels == (128, 256, 256)
        assert 60e6 < n < 80e6  # docs/method.md#spec-8: the paper refiner has 68 M parameters
    else:
        w = cfg.window
        out = net(torch.zeros(1, 3, w, w, w), torch.zeros(1, dtype=torch.long))
        assert out.shape == (1, 1, w, w, w)
