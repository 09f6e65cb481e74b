"""``refine_paths`` over several files: grouping, one refine.json, refused output clashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realdeal.data.io import load_volume
from realdeal.pipelines.refiner import RefineSettings, refine_paths
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

SETTINGS = RefineSettings(sampler="ddim", steps=2, eta=1.0, max_batch=4, seed=5)


@pytest.mark.slow
def test_files_refined_together_match_grouping_rules_and_record_once(tmp_path):
    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    files = coarse_volumes(tmp_path / "in")
    together = refine_paths(ckpt, [str(tmp_path / "in")], tmp_path / "together", SETTINGS)
    one_by_one = tmp_path / "alone"
    for f in files:  # each file on its own: a group of one
        refine_paths(ckpt, [str(f)], one_by_one / f.name, SETTINGS)
    assert [r["input"] for r in together] == [str(f) for f in files]
    for f in files:
        a = load_volume(tmp_path / "together" / f.name)
        b = load_volume(one_by_one / f.name)
        x = load_volume(f)
        # the same seed and plan; equal up to the float rounding of batched convolutions
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-5)
        assert np.abs(a.data - x.data).max() > 0.05 and np.array_equal(a.affine, x.affine)
    report = json.loads((tmp_path / "together" / "refine.json").read_text())
    assert report["settings"]["batch_volumes"] == 4 and report["processes"] == 1
    assert [v["output"] for v in report["volumes"]] == [r["output"] for r in together]
    # A second run with the same grouping is identical bit for bit.
    again = refine_paths(ckpt, [str(tmp_path / "in")], tmp_path / "again", SETTINGS)
    for r, s in zip(together, again, strict=True):
        assert np.array_equal(load_volume(r["output"]).data, load_volume(s["output"]).data)


def test_two_inputs_with_one_output_name_are_refused_before_any_work(tmp_path):
    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    a = coarse_volumes(tmp_path / "a", 1)[0]
    b = coarse_volumes(tmp_path / "b", 1)[0]
    with pytest.raises(Exception, match="same output name"):
        refine_paths(ckpt, [str(a), str(b)], tmp_path / "out", SETTINGS)
    assert not (tmp_path / "out").exists()
    with pytest.raises(Exception, match="batch_volumes"):
        refine_paths(ckpt, [str(a)], tmp_path / "o.nii.gz", RefineSettings(batch_volumes=0))


def test_shards_cover_every_item_once_in_turn():
    from realdeal.runtime.distributed import DistInfo, shard

    items = list(range(7))
    parts = [shard(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(items, None) == items == shard(items, DistInfo())


@pytest.mark.slow
def test_compiled_network_pads_to_one_batch_shape_and_matches_eager(tmp_path):
    import dataclasses

    import torch

    from realdeal.runtime.device import FixedBatch

    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    files = coarse_volumes(tmp_path / "in", 2)
    eager = refine_paths(ckpt, [str(tmp_path / "in")], tmp_path / "eager", SETTINGS)
    # the "eager" backend runs torch.compile's machinery without a C++ toolchain (fast on CI)
    compiled = dataclasses.replace(SETTINGS, compile="eager")
    seen: list[int] = []
    forward = FixedBatch.forward

    def spy(self, x, t):
        out = forward(self, x, t)
        seen.append(len(x))
        assert out.shape[0] == len(x)  # cut back to the windows asked for
        return out

    FixedBatch.forward = spy
    try:
        comp = refine_paths(ckpt, [str(tmp_path / "in")], tmp_path / "comp", compiled)
    finally:
        FixedBatch.forward = forward
    assert seen and max(seen) <= SETTINGS.max_batch and min(seen) < SETTINGS.max_batch
    for a, b, f in zip(eager, comp, files, strict=True):
        # zero padding changes nothing a window computes beyond float rounding
        np.testing.assert_allclose(
            load_volume(a["output"]).data, load_volume(b["output"]).data, rtol=0, atol=1e-5
        )
        assert load_volume(b["output"]).data.shape == load_volume(f).data.shape
    report = json.loads((tmp_path / "comp" / "refine.json").read_text())
    assert report["settings"]["compile"] == "eager"

    class Echo(torch.nn.Module):  # returns its input with t added: shows what padding feeds
        def forward(self, x, t):
            assert x.shape[0] == 4 and t.shape == (4,)
            return x + t[:, None]

    net = FixedBatch(Echo(), size=4)
    y = net(torch.ones(3, 2), torch.full((3,), 2.0))
    assert torch.equal(y, torch.full((3, 2), 3.0))
    with pytest.raises(ValueError, match="over the fixed batch size 4"):
        net(torch.ones(5, 2), torch.zeros(5))
    with pytest.raises(Exception, match="compile needs max_batch"):
        no_bound = dataclasses.replace(compiled, max_batch=None)
        refine_paths(ckpt, [str(files[0])], tmp_path / "x.nii.gz", no_bound)
