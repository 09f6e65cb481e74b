"""benchmarks/few_step_refiner.py on a tiny prepared dataset, a tiny teacher and two 'students'
(the teacher's weights with distillation records): every row runs and every figure is finite."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tiny_refiner import tiny_refiner_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("few_step_refiner")


def _students(teacher: Path, run: Path) -> None:
    from realdeal.diffusion.samplers import halving_timesteps
    from realdeal.runtime.checkpoint import Distillation, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(teacher)
    for k, steps in ((1, 2), (2, 1)):
        rec = Distillation(teacher_sha256="0" * 64, teacher_steps=4, rounds=k, steps=steps,
                           spacing="linear", timesteps=tuple(halving_timesteps(1000, steps)))  # fmt: skip
        (run / "rounds").mkdir(parents=True, exist_ok=True)
        save_checkpoint(run / "rounds" / f"round-{k}.pt", dataclasses.replace(ckpt, distilled=rec))


@pytest.mark.slow
def test_every_row_runs_and_the_table_is_written(bench, raw_folder, tmp_path):
    from scipy import ndimage

    from realdeal.data.dataset import PrepareConfig, prepare_dataset

    ds = prepare_dataset(str(raw_folder / "*_T1w.nii.gz"), tmp_path / "data",
                         PrepareConfig(shape=(24, 24, 24), window=8, test_fraction=0.34),
                         labels="{dir}/{id}_dseg.nii.gz")  # fmt: skip
    for sid in ds.ids("test"):
        x = ds.load_image(sid).data
        ds.save_derived("reconstructions", sid, ndimage.gaussian_filter(x, 1.0).astype(np.float32))
    teacher = tiny_refiner_checkpoint(tmp_path / "teacher.pt")
    _students(teacher, tmp_path / "run")
    out = tmp_path / "few.json"
    assert bench.main(["--data", str(tmp_path / "data"), "--teacher", str(teacher),
                       "--students", str(tmp_path / "run"), "--subjects", "2",
                       "--reference-subjects", "1", "--reference-steps", "2", "--teacher-steps",
                       "2", "--teacher-distilled-steps", "2", "--student-steps", "1", "2", "4",
                       "--threads", "1",
                       "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    names = [r["row"] for r in res["rows"]]
    assert names[0].startswith("reference") and len(res["rows"][0]["subjects"]) == 1
    assert names[1:] == [
        "teacher, 2 steps",
        "teacher, 2 steps, distilled sampler",
        "student, 1 steps (round-2.pt)",
        "student, 2 steps (round-1.pt)",
    ]  # fmt: skip (no 4-step student)
    for r in res["rows"]:
        m = r["mean"]
        assert all(math.isfinite(v) for v in m.values()), r
        assert m["hog_over_reconstruction"] > 0 and m["noise_kl_wm"] >= 0
    det = res["rows"][2]["sampler"]
    assert (det["sampler"], det["steps"], det["spacing"]) == ("distilled", 2, "quadratic")
    student1 = res["rows"][3]
    assert student1["sampler"]["sampler"] == "distilled" and student1["sampler"]["steps"] == 1
    assert set(student1["over_reference"]) == {"sharpness", "noise_std"}
    assert "| student, 1 steps (round-2.pt) | 2 |" in out.with_suffix(".md").read_text()
