"""README's "Python API" block runs as written, in a folder laid out like ``demo-output``
(tiny random-weight models and small volumes stand in for the demo's), and uses only names
``realdeal`` exports."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import realdeal
from tiny_ldm import tiny_ldm_checkpoint
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_uses_only_public_names():
    tree = ast.parse(_api_block())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules == {"realdeal"} and imported
    assert set(imported) <= set(realdeal.__all__)
    assert not any(isinstance(n, ast.Import) for n in ast.walk(tree))


@pytest.mark.slow
def test_readme_api_block_runs(tmp_path, monkeypatch):
    demo = tmp_path / "demo-output"
    ldm_dir, ref_dir = demo / "models" / "ldm", demo / "models" / "refiner"
    ldm_dir.mkdir(parents=True)
    ref_dir.mkdir(parents=True)
    (tmp_path / "build").mkdir()
    shutil.move(tiny_ldm_checkpoint(tmp_path / "build"), ldm_dir / "checkpoint.pt")
    tiny_refiner_checkpoint(ref_dir / "checkpoint.pt", window=16)  # few windows: fast
    vols = coarse_volumes(demo / "data" / "images", n=3)
    (demo / "data" / "reconstructions").mkdir()
    shutil.copy(vols[0], demo / "data" / "reconstructions" / "sub-013.nii.gz")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_api_block(), "README.md", "exec"), scope)
    samples, refined = scope["samples"], scope["refined"]
    assert isinstance(refined, torch.Tensor) and refined.shape == samples.shape
    assert not torch.equal(refined, samples)
    out = realdeal.load_volume(tmp_path / "sub-013_refined.nii.gz")
    assert np.allclose(out.affine, scope["coarse"].affine) and out.shape == scope["coarse"].shape
    assert (tmp_path / "metrics").is_dir() and "refined" in scope["result"].markdown
