"""benchmarks/gpu_check.py: its ``--tiny`` mode runs every part on the CPU and writes a
complete JSON of finite figures; the time budget skips what does not fit and says why."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _quality_input(path: Path) -> Path:
    """A brain-like (coarse, original, labels) triple, like benchmarks/gpu_wheels.sh writes."""
    rng = np.random.default_rng(0)
    shape = (40, 56, 40)
    idx = np.indices(shape, dtype=np.float32)
    c = (np.array(shape, np.float32) - 1) / 2
    d = np.sqrt(sum(((idx[i] - c[i]) / (0.4 * shape[i])) ** 2 for i in range(3)))
    coarse = np.where(d < 1, 0.2 + 0.2 * np.cos(idx[0] / 4), -1.0).astype(np.float32)
    original = np.where(d < 1, coarse + 0.05 * rng.standard_normal(shape), -1.0)
    labels = np.where(d < 0.6, 2, np.where(d < 1, 3, 0)).astype(np.int16)
    np.savez_compressed(path, coarse=coarse, original=original.astype(np.float32), labels=labels)
    return path


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "gpu_check.json"
    q = _quality_input(tmp_path / "quality_input.npz")
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--quality-input", str(q), *args], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout
    return json.loads(out.read_text())


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_tiny_run_covers_every_part(tmp_path):
    res = _run(tmp_path, "--budget-s", "3000")
    assert res["mode"].startswith("tiny") and res["device"] == "cpu"
    assert res["skipped"] == [] and _finite(res["seconds"]) and res["complete"]

    a = res["parts"]["a"]
    names = [v["variant"] for v in a["variants"]]
    assert len(names) == 3 and any("compile" in n for n in names)
    for v in a["variants"]:
        assert _finite(v["s_per_window"], v["windows_per_s"], v["peak_memory_gb"]), v
        assert v["windows_per_s"] == pytest.approx(1 / v["s_per_window"])
    assert a["best_variant"] in names
    authors, *ours = a["runs"]
    assert authors["plan"] == "official" and authors["extrapolated"]
    assert authors["unet_evaluations_extrapolated"] == authors["windows"] * 1000
    assert authors["wall_s_extrapolated"] == pytest.approx(authors["wall_s"] * 1000)
    assert [r["steps"] for r in ours] == [1, 2] and all(r["plan"] == "wavefront" for r in ours)
    for r in a["runs"]:
        assert _finite(r["wall_s"], r["windows_per_s"], r["unet_evaluations_per_s"])
        assert _finite(r["peak_memory_gb"])
        assert r["unet_evaluations"] == r["windows"] * r["steps"]

    b = res["parts"]["b"]
    assert [(r["model"], r["batch"]) for r in b["train"]] == [
        ("autoencoder", 1), ("autoencoder", 2), ("ldm", 1), ("ldm", 2)
    ]  # fmt: skip
    for r in b["train"]:
        assert _finite(r["step_s"], r["first_step_s"], r["peak_memory_gb"], r["loss"]), r
    assert _finite(b["sample"]["wall_s"]) and b["sample"]["finite"]

    c = res["parts"]["c"]
    kinds = [r["plan"] for r in c["runs"]]
    assert kinds == ["wavefront", "wavefront", "official"]  # ours linear, ours default, reference
    assert "quadratic steps, analytic variance" in c["runs"][1]["run"]
    for r in c["runs"]:
        q = r["quality"]
        assert set(q) == {"sharpness", "noise_std", "seam_score", "noise_kl_wm"}
        assert _finite(*q.values()) and q["noise_kl_wm"] >= 0
    ratios = c["runs"][0]["quality_over_reference"]
    assert _finite(*ratios.values()) and set(ratios) == set(c["runs"][-1]["quality"])


@pytest.mark.slow
def test_budget_guard_skips_and_says_why(tmp_path):
    res = _run(tmp_path, "--budget-s", "0")
    assert res["complete"]
    items = [s["item"] for s in res["skipped"]]
    assert any(i.startswith("(a)") for i in items)
    assert any(i.startswith("(b)") for i in items)
    assert any(i.startswith("(c)") for i in items)
    assert all("budget" in s["reason"] for s in res["skipped"])
    assert res["parts"]["a"]["note"] == "no variant ran"
    assert res["parts"]["b"]["train"] == [] and "sample" not in res["parts"]["b"]


def test_a_failing_part_is_recorded_and_the_next_one_still_runs(tmp_path, monkeypatch):
    """A GPU call may be the only one: an error in one part must not lose the others."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # its dataclasses look themselves up there
    spec.loader.exec_module(mod)

    def broken(*a, **k):
        raise RuntimeError("cuDNN said no\nsecond line")

    monkeypatch.setattr(mod, "part_a", broken)
    out = tmp_path / "g.json"
    mod.main(["--tiny", "--device", "cpu", "--parts", "a", "b", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["parts"]["a"] == {"error": "RuntimeError: cuDNN said no"}
    assert res["complete"] and [r["model"] for r in res["parts"]["b"]["train"]][:1] == [
        "autoencoder"
    ]


@pytest.mark.slow
def test_selected_items_and_compiled_end_to_end(tmp_path):
    """What a short device call asks for: chosen variants, step counts, no authors' probe, a
    max batch and ours compiled as `refine --compile` does (eager backend on the CPU)."""
    res = _run(tmp_path, "--parts", "a", "--variants", "fp32", "--e2e-steps", "1", "2",
               "--authors-probe-steps", "0", "--max-batch", "3", "--e2e-compile")  # fmt: skip
    a = res["parts"]["a"]
    assert [v["variant"] for v in a["variants"]] == ["fp32"] and set(res["parts"]) == {"a"}
    labels = [r["run"] for r in a["runs"]]
    assert labels == ["ours + DPM-Solver++ 1", "ours + DPM-Solver++ 2",
                      "ours + DPM-Solver++ 1, compiled (incl. compiling)",
                      "ours + DPM-Solver++ 1, compiled",
                      "ours + DPM-Solver++ 2, compiled"]  # fmt: skip
    # the first compiled run pays the compilation; then each step count compiled already
    eager, compiled = a["runs"][:2], a["runs"][3:]
    assert a["runs"][2]["unet_evaluations"] == eager[0]["unet_evaluations"]
    for e, c in zip(eager, compiled, strict=True):  # the same plan and work, padded calls
        assert (c["unet_evaluations"], c["network_calls"]) == (
            e["unet_evaluations"],
            e["network_calls"],
        )
        assert c["plan"] == "wavefront" and _finite(c["wall_s"])
    # --max-batch 3: ours takes at most 3 windows a call
    assert all(r["network_calls"] * 3 >= r["unet_evaluations"] for r in a["runs"])
    with pytest.raises(AssertionError, match="unknown --variants"):
        _run(tmp_path, "--parts", "a", "--variants", "fp16")
    # no end-to-end step counts: nothing to compile end to end either
    res = _run(tmp_path, "--parts", "a", "--variants", "fp32", "--e2e-steps",
               "--authors-probe-steps", "0", "--e2e-compile")  # fmt: skip
    assert res["parts"]["a"]["runs"] == [] and res["complete"]


def _run_checkpoint(path: Path) -> Path:
    """A resumable refiner checkpoint (optimizer and RNG state and all), as a `realdeal train
    refiner` run writes it, with the shipped demo refiner's weights."""
    import dataclasses

    import torch

    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    shipped = load_checkpoint(ROOT / "src/realdeal/demo_checkpoints/refiner.pt", "refiner")
    params = [
        torch.nn.Parameter(v.clone()) for v in shipped.model.values() if v.is_floating_point()
    ]
    opt = torch.optim.AdamW(params)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    ckpt = dataclasses.replace(
        shipped,
        model={k: v.clone() for k, v in shipped.model.items()},
        optimizer=opt.state_dict(),
        grad_scaler={},
        rng=[{"cpu": torch.get_rng_state()}],
        slim=False,
    )
    assert ckpt.resumable
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, ckpt)


@pytest.mark.slow
def test_quality_reference_takes_a_run_checkpoint_and_chosen_steps(tmp_path):
    """(c) as a call right after training a refiner asks for it: that run's checkpoint
    (optimizer state and all), ours with the default sampling only, at chosen step counts."""
    run = _run_checkpoint(tmp_path / "refiner-run" / "checkpoint.pt")
    res = _run(tmp_path, "--parts", "c", "--refiner", str(run), "--ours-steps", "1", "2",
               "--ours-sampling", "default")  # fmt: skip
    c = res["parts"]["c"]
    assert c["checkpoint"] == str(run.resolve())
    assert [(r["plan"], r["steps"]) for r in c["runs"]] == [
        ("wavefront", 1), ("wavefront", 2), ("official", 2)
    ]  # fmt: skip
    assert all("quadratic steps, analytic variance" in r["run"] for r in c["runs"][:2])
    assert _finite(*c["runs"][1]["quality_over_reference"].values())
    with pytest.raises(AssertionError, match="--refiner .*no such file"):
        _run(tmp_path, "--parts", "c", "--refiner", str(tmp_path / "missing.pt"))


def test_warm_compiled_runs_need_their_compilation(tmp_path, monkeypatch):
    """If the run that pays the compilation fails (out of memory), the 'compiled' runs after it
    are skipped and say why: they would compile unbudgeted and report that as a warm time."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_warm", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    real = mod._refine_run

    def refine_run(label, *a, **k):
        if "incl. compiling" in label:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(label, *a, **k)

    monkeypatch.setattr(mod, "_refine_run", refine_run)
    out = tmp_path / "g.json"
    mod.main(["--tiny", "--device", "cpu", "--parts", "a", "--variants", "fp32", "--e2e-steps",
              "1", "--authors-probe-steps", "0", "--e2e-compile", "--out", str(out)])  # fmt: skip
    res = json.loads(out.read_text())
    runs = res["parts"]["a"]["runs"]
    assert [r["run"] for r in runs] == [
        "ours + DPM-Solver++ 1", "ours + DPM-Solver++ 1, compiled (incl. compiling)"
    ]  # fmt: skip
    assert runs[1]["error"].startswith("out of memory")
    assert {"item": "(a) ours + DPM-Solver++ 1, compiled",
            "reason": "its compilation did not run"} in res["skipped"]  # fmt: skip


@pytest.mark.slow
def test_distilled_student_timing_runs_in_tiny_mode(tmp_path):
    """(a) with --student-steps: ours with the distilled sampler at those steps, one U-Net
    evaluation per window and step, beside nothing else asked for."""
    res = _run(tmp_path, "--parts", "a", "--variants", "fp32", "--e2e-steps",
               "--authors-probe-steps", "0", "--student-steps", "1", "2")  # fmt: skip
    runs = res["parts"]["a"]["runs"]
    assert [(r["run"], r["sampler"], r["steps"]) for r in runs] == [
        ("ours + distilled student 1", "distilled", 1),
        ("ours + distilled student 2", "distilled", 2),
    ]
    for r in runs:
        assert r["unet_evaluations"] == r["windows"] * r["steps"] and _finite(r["wall_s"])
