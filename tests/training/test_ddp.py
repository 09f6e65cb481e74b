"""CPU processes under torchrun (gloo): two train like one process with the same global batch;
four resume a stopped run bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config, toy_model

from realdeal.training.engine import read_metrics, train

HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(HERE.parents[1] / "src"), str(HERE), os.environ.get("PYTHONPATH", "")]
        ),
    }


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    env = _env()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "ddp_worker.py"),
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # ranks stay in lockstep

    single = toy_model()
    train(
        ToyTask(),
        single,
        ToyData(),
        toy_config(steps=4, checkpoint_every=2),
        tmp_path / "one",
        run_config={},
        model_config=MODEL_CONFIG,
    )
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5)
        assert not torch.equal(v, toy_model().state_dict()[k]) or k.endswith("bias")  # it trained
    la = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")]
    assert len(la) == 4
    torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "ddp" / "rank1").exists()


@pytest.mark.slow
def test_four_process_run_resumes_bit_for_bit(tmp_path):
    """Stopped at step 6 and resumed to 9, a 4-process run ends with the uninterrupted run's
    weights and losses to the last bit (DDP's own float32 gradient sum did not: its bucket
    layout after a restart changed the order of the sum, 1.5e-8 apart after 9 steps)."""

    def launch(out: str, steps: int, mode: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=4", str(HERE / "ddp_resume_worker.py"),
               str(tmp_path / out), str(steps), mode]  # fmt: skip
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]

    launch("full", 9, "new")
    launch("part", 6, "new")
    launch("part", 9, "resume")
    full = torch.load(tmp_path / "full" / "rank0.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "rank0.pt", weights_only=True)
    assert all(torch.equal(full[k], part[k]) for k in full)
    la = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl")]
    assert len(la) == 9 and la == lb
