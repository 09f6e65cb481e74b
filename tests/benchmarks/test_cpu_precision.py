"""benchmarks/cpu_precision.py: fp32 and bf16, contiguous and channels-last, side by side on
the shipped demo refiner, network and end to end, into one JSON and table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_gpu_check import _quality_input  # tests/benchmarks is on sys.path (rootdir import mode)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "cpu_precision.py"


@pytest.mark.slow
def test_cpu_precision_writes_every_variant(tmp_path):
    out = tmp_path / "cpu_precision.json"
    q = _quality_input(tmp_path / "quality_input.npz")
    cmd = [sys.executable, str(SCRIPT), "--batch", "2", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--quality-input", str(q)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = {(r["precision"], r["weights"]) for r in result["network"]}
    assert variants == {
        (p, w) for p in ("fp32", "bf16") for w in ("contiguous", "channels_last_3d")
    }
    assert all(r["s_per_window"] > 0 for r in result["network"])
    assert result["network"][0]["speedup"] == 1.0
    assert [r["precision"] for r in result["e2e"]] == ["fp32", "bf16"]
    for r in result["e2e"]:
        assert all(
            math.isfinite(r[k]) for k in ("wall_s", "sharpness", "noise_kl_wm", "seam_score")
        )
    # bf16 changes the result, but only a little: the same sampler, noise and plan
    d = result["e2e_diff"]
    assert 0 < d["abs_diff_mean"] < 0.05
    md = out.with_suffix(".md").read_text()
    assert "| bf16 | channels_last_3d |" in md and "| original |" in md
