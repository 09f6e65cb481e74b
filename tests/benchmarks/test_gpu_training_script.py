"""training-runs/demo-gpu/train.sh, the script one call on a GPU machine runs, rehearsed on the
CPU with tiny step counts: a broken script would waste the GPU time of that call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realdeal.cli import main
from realdeal.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training-runs" / "demo-gpu" / "train.sh"


def _run_script(data: Path, budget: int, out: Path, **env: str) -> str:
    """train.sh DATA BUDGET OUT with ``env``; its output (skips when the probes left too
    little of the budget on a loaded machine; 124: a run stopped by its time limit)."""
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(data), str(budget), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    if proc.returncode == 3 and "too little to train" in log:
        pytest.skip(f"the probes used most of the {budget} s budget on this loaded machine: {log}")
    assert proc.returncode in (0, 124), log
    return log


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["ldm refiner", "refiner"])
def test_gpu_training_script_probes_trains_and_stops_cleanly(tmp_path, raw_folder, runs):
    data = tmp_path / "data"
    assert main(["-q", "prepare", str(raw_folder / "*_T1w.nii.gz"), "-o", str(data),
                 "--shape", "32", "32", "32", "--window", "32"]) == 0  # fmt: skip
    out = tmp_path / "runs"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3 = ours
        PROBE_STEPS="2",
        # --log-every 1: a run that the time limit stops after a few steps on a slow machine
        # still has its metrics (CI once stopped the refiner before its first 100-step log)
        EXTRA_ARGS="--batch-size 2 --workers 0 --log-every 1",
        FROM_SHIPPED="1",
        RUNS=runs,
    )
    log = _run_script(data, 75, out, **env)
    assert "probes done" in log and "training done" in log, log
    for kind in runs.split():
        ckpt = load_checkpoint(out / kind / "checkpoint.pt", kind=kind)
        assert ckpt.step >= 1 and ckpt.resumable
        config = json.loads((out / kind / "config.json").read_text())["config"]["train"]
        assert config["batch_size"] == 2
        assert config["init_from"].endswith(f"demo_checkpoints/{kind}.pt")  # FROM_SHIPPED=1
        assert (out / kind / "metrics.jsonl").stat().st_size > 0
    assert not (out / "probe").exists()  # the probes are cleaned up
    if runs == "refiner":  # RUNS=refiner: the LDM is neither probed nor trained
        assert not (out / "ldm").exists() and not (out / "probe-ldm.log").exists()
        assert "refiner done" in log and "ldm done" not in log


@pytest.mark.slow
def test_gpu_training_script_trains_the_ldm_on_carried_latents_and_packs_it(tmp_path, raw_folder):
    """The population LDM's call (training-runs/ldm-population/README.md): the LDM trains on
    float16 latents beside a bare dataset.json (no images), and pack_run.py packs its slim
    weights, which sample with a --data that has the images."""
    import tarfile

    from safetensors import safe_open
    from safetensors.torch import save_file

    data = tmp_path / "data"
    assert main(["-q", "prepare", str(raw_folder / "*_T1w.nii.gz"), "-o", str(data),
                 "--shape", "32", "32", "32", "--window", "32"]) == 0  # fmt: skip
    enc = tmp_path / "enc"
    ae = ROOT / "src" / "realdeal" / "demo_checkpoints" / "autoencoder.pt"
    assert main(["-q", "encode", "--autoencoder", str(ae), "--data", str(data), "-o", str(enc),
                 "--split", "train", "--device", "cpu"]) == 0  # fmt: skip
    carried = tmp_path / "carried"
    (carried / "latents").mkdir(parents=True)
    (carried / "dataset.json").write_bytes((data / "dataset.json").read_bytes())
    for f in enc.glob("*.safetensors"):  # as prepare_device.py carries them
        with safe_open(str(f), framework="pt") as h:
            z, meta = h.get_tensor("latent"), h.metadata()
        save_file({"latent": z.half()}, str(carried / "latents" / f.name), metadata=meta)
    config = json.loads((ROOT / "training-runs/ldm-population/ldm-gpu.json").read_text())
    config["config"]["unet"]["channels"] = [8, 16, 16]  # tiny, the rest as the recipe
    config["config"]["unet"]["num_head_channels"] = [0, 0, 16]
    config["config"]["unet"]["norm_num_groups"] = 8
    (tmp_path / "ldm.json").write_text(json.dumps(config))
    out = tmp_path / "runs"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PROBE_STEPS="2",
        EXTRA_ARGS="--batch-size 2 --log-every 1 --snapshot-every 2 --device cpu --precision fp32",
        RUNS="ldm",
        LATENTS=str(carried / "latents"),
        LDM_CONFIG=str(tmp_path / "ldm.json"),
    )
    log = _run_script(carried, 60, out, **env)
    assert "reconstructions ready" not in log  # the refiner does not train: none made
    ckpt = load_checkpoint(out / "ldm" / "checkpoint.pt", kind="ldm")
    assert ckpt.step >= 2 and ckpt.model_config["channels"] == [8, 16, 16]
    inputs = json.loads((out / "ldm" / "inputs.json").read_text())["inputs"]
    assert "latents" in inputs and not (out / "ldm" / "latents").exists()

    packed = subprocess.run(
        [sys.executable, str(ROOT / "training-runs/ldm-population/pack_run.py"), str(out)],
        capture_output=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    back = tmp_path / "back"
    with tarfile.open(fileobj=__import__("io").BytesIO(packed)) as tar:
        tar.extractall(back, filter="data")
    final = back / "ldm" / f"final-step-{ckpt.step:07d}.pt"
    assert load_checkpoint(final, kind="ldm").slim
    assert (back / "ldm" / "metrics.jsonl").is_file() and (back / "train-ldm.log").is_file()
    assert not (back / "ldm" / "checkpoint.pt").exists()
    snaps = list((back / "ldm" / "snapshots").glob("step-*.pt"))
    assert len(snaps) <= 1 and all(p.name != f"step-{ckpt.step:07d}.pt" for p in snaps)
    samples = tmp_path / "samples"
    assert main(["-q", "sample", "--ldm", str(final), "--data", str(data), "-o", str(samples),
                 "--steps", "2", "--device", "cpu"]) == 0  # fmt: skip
    assert (samples / "sample_000.nii.gz").is_file()
