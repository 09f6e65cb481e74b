"""The LDM samples with every registered sampler (DPM-Solver++ included), from Python and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realdeal.cli import main
from realdeal.data.io import load_volume
from tiny_ldm import tiny_ldm_checkpoint


@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ldm"))


@pytest.fixture(scope="module")
def pipe(ldm_checkpoint):
    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    pipe = LatentDiffusionPipeline.from_checkpoint(ldm_checkpoint)
    return pipe


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_every_sampler_gives_seeded_images(pipe, sampler):
    a = pipe(2, sampler=sampler, steps=3, seed=1, batch_size=2, show_progress=False)
    b = pipe(2, sampler=sampler, steps=3, seed=1, batch_size=2, show_progress=False)
    assert a.shape == (2, 24, 32, 24) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])


@pytest.mark.slow
def test_default_is_the_tables_ldm_row(pipe):
    from realdeal.diffusion.registry import DEFAULT_SAMPLING

    row = DEFAULT_SAMPLING["ldm"]
    default = pipe(1, seed=2, show_progress=False)
    named = pipe(1, sampler=row.sampler, steps=row.steps, eta=row.eta, seed=2,
                 show_progress=False)  # fmt: skip
    assert torch.equal(default, named)
    dpm = pipe(1, sampler="dpm++", steps=row.steps, seed=2, show_progress=False)
    assert not torch.equal(default, dpm)


def test_sample_command_with_dpm_solver(ldm_checkpoint, tmp_path):
    out = tmp_path / "out"
    argv = ["-q", "sample", "--ldm", str(ldm_checkpoint), "-o", str(out), "-n", "1",
            "--sampler", "dpm++", "--steps", "3", "--seed", "5", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "sample_config.json").read_text())
    assert (config["sampler"], config["steps"], config["eta"]) == ("dpm++", 3, 0.0)
    x = load_volume(out / "sample_000.nii.gz").data
    assert x.shape == (24, 32, 24) and np.isfinite(x).all()


@pytest.mark.parametrize("recorded", ["moved/data", "", "imageless"])
def test_sample_without_the_training_dataset_says_pass_data(ldm_checkpoint, tmp_path, capsys,
                                                            recorded):  # fmt: skip
    """A checkpoint whose recorded dataset is not here (a relative path from another folder,
    or an import that names none) or has no images (only the dataset.json an LDM trained on
    latents needs) is refused in one line that says to pass --data."""
    import dataclasses
    import shutil

    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(ldm_checkpoint, kind="ldm")
    if recorded == "imageless":
        recorded = str(tmp_path / "bare")
        (tmp_path / "bare").mkdir()
        shutil.copy(Path(ckpt.dataset) / "dataset.json", tmp_path / "bare")
    moved = save_checkpoint(tmp_path / "moved.pt", dataclasses.replace(ckpt, dataset=recorded))
    out = tmp_path / "out"
    argv = ["-q", "sample", "--ldm", str(moved), "-o", str(out), "--steps", "2", "--device", "cpu"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(moved) in err and "pass --data" in err
    assert (recorded or "names no dataset") in err
    assert not out.exists()
