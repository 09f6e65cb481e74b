"""README's "Python API" block runs as written, in a folder laid out like ``demo-output``
(tiny random-weight models and small volumes stand in for the demo's), and uses only names
``realdeal`` exports."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import realdeal
from tiny_ldm import tiny_ldm_checkpoint
from tiny_refiner import tiny_refiner_checkpoint

from synthetic import save_nifti

README = Path(__file__).resolve().parents[1] / "README.md"


def _brains(folder: Path, n: int) -> list[Path]:
    """``n`` noisy ellipsoid 'brains' in [−1, 1] big enough for the metrics' 64² patches."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = np.array((66, 72, 66))
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = np.sqrt((((idx - shape / 2) / (shape * 0.45)) ** 2).sum(-1))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        x = np.where(d < 1, 0.3 - 0.4 * d + 0.05 * rng.standard_normal(d.shape), -1.0)
        paths.append(save_nifti(folder / f"sub-{i:03d}.nii.gz", x.astype(np.float32)))
    return paths


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
def test_readme_api_block_runs_as_a_script(tmp_path):
    demo = tmp_path / "demo-output"
    ldm_dir, ref_dir = demo / "models" / "ldm", demo / "models" / "refiner"
    ldm_dir.mkdir(parents=True)
    ref_dir.mkdir(parents=True)
    (tmp_path / "build").mkdir()
    shutil.move(tiny_ldm_checkpoint(tmp_path / "build"), ldm_dir / "checkpoint.pt")
    tiny_refiner_checkpoint(ref_dir / "checkpoint.pt", window=32)  # few windows: fast
    vols = _brains(demo / "eval" / "sets" / "real", n=3)
    (demo / "data" / "reconstructions").mkdir(parents=True)
    shutil.copy(vols[0], demo / "data" / "reconstructions" / "sub-002.nii.gz")
    # as a user runs it: a script of its own (worker processes of the metrics import it again)
    checks = """
import numpy as _np, torch as _torch
assert isinstance(refined, _torch.Tensor) and refined.shape == samples.shape
assert not _torch.equal(refined, samples)
_out = load_volume("sub-002_refined.nii.gz")
assert _np.allclose(_out.affine, coarse.affine) and _out.shape == coarse.shape
assert "refined" in result.markdown
print("README API BLOCK OK")
"""
    script = tmp_path / "readme_api.py"
    script.write_text(_api_block() + checks)
    env = {**os.environ, "REALDEAL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README API BLOCK OK" in proc.stdout
    assert (tmp_path / "metrics").is_dir()
