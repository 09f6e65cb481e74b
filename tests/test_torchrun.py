"""Inference under torchrun: two CPU processes (gloo) split the inputs and write exactly what
one process writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realdeal.data.io import load_volume
from tiny_ldm import tiny_ldm_checkpoint
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

HERE = Path(__file__).parent
FLAGS = ["--sampler", "ddim", "--steps", "2", "--eta", "1", "--seed", "3", "--max-batch", "4",
         "--batch-volumes", "2", "--device", "cpu"]  # fmt: skip


def realdeal_env() -> dict[str, str]:
    """The environment of a realdeal subprocess: this checkout's source, no progress bars, and
    one CPU thread per process (torchrun's default): on CPU, how many threads split a
    convolution changes its result in the last bits, so only equal settings compare exactly."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "REALDEAL_NO_PROGRESS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def run_realdeal(args: list[str], nproc: int | None = None) -> subprocess.CompletedProcess:
    """``realdeal ARGS`` in a fresh process, under torchrun with ``nproc`` processes if given
    (:func:`realdeal_env`)."""
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *(launch if nproc else []), "-m", "realdeal", *args]
    return subprocess.run(cmd, env=realdeal_env(), capture_output=True, text=True, timeout=300)


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(
    args: list[str], nnodes: int = 2, nproc_per_node: int = 2, timeout: float = 300
) -> list[subprocess.CompletedProcess]:
    """``realdeal ARGS`` as a job of ``nnodes`` simulated nodes: one ``torchrun --nnodes
    NNODES --nproc-per-node N`` launch per node, all started together, meeting through the c10d
    rendezvous on the loopback address (as on a cluster, where each node runs one launch). The
    nodes' completed processes, in launch order."""
    endpoint = f"127.0.0.1:{free_port()}"
    launch = ["-m", "torch.distributed.run", f"--nnodes={nnodes}",
              f"--nproc-per-node={nproc_per_node}", "--rdzv-backend=c10d",
              f"--rdzv-endpoint={endpoint}", f"--rdzv-id=realdeal-test-{endpoint}",
              "--max-restarts=0"]  # fmt: skip
    cmd = [sys.executable, *launch, "-m", "realdeal", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    nodes = [
        subprocess.Popen(cmd, env=realdeal_env(), start_new_session=True, **pipes)
        for _ in range(nnodes)
    ]
    done = []
    try:
        for node in nodes:
            try:
                out, err = node.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:  # waiting for a node that failed: its whole launch
                os.killpg(node.pid, signal.SIGKILL)
                out, err = node.communicate()
            done.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.communicate()
    return done


@pytest.mark.slow
def test_refine_under_torchrun_equals_one_process(tmp_path):
    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    files = coarse_volumes(tmp_path / "in", 3)
    proc = run_realdeal(["refine", str(tmp_path / "in"), "-o", str(tmp_path / "two"),
                         "--checkpoint", str(ckpt), *FLAGS], nproc=2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = run_realdeal(["refine", str(tmp_path / "in"), "-o", str(tmp_path / "one"),
                        "--checkpoint", str(ckpt), *FLAGS])  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    for f in files:
        two = load_volume(tmp_path / "two" / f.name).data
        one = load_volume(tmp_path / "one" / f.name).data
        np.testing.assert_array_equal(two, one)
        assert not np.array_equal(one, load_volume(f).data)
    # one refine.json, written by rank 0 with every rank's volumes, in input order
    report = json.loads((tmp_path / "two" / "refine.json").read_text())
    assert report["processes"] == 2
    assert [v["input"] for v in report["volumes"]] == [str(f) for f in files]
    # printed once (by rank 0), one line per volume
    assert sum(line.endswith(")") and ".nii.gz:" in line for line in proc.stdout.splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        [f.name for f in files] + ["refine.json"]
    )  # no temporary files left behind


@pytest.mark.slow
def test_sample_under_torchrun_equals_one_process(tmp_path):
    ldm = tiny_ldm_checkpoint(tmp_path)
    flags = ["--ldm", str(ldm), "-n", "3", "--sampler", "ddpm", "--steps", "3", "--seed", "4",
             "--device", "cpu"]  # fmt: skip
    proc = run_realdeal(["sample", "-o", str(tmp_path / "two"), *flags], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = run_realdeal(["sample", "-o", str(tmp_path / "one"), *flags])
    assert one.returncode == 0, one.stderr[-3000:]
    names = [f"sample_{i:03d}.nii.gz" for i in range(3)]
    arrays = [load_volume(tmp_path / "one" / n).data for n in names]
    for n, a in zip(names, arrays, strict=True):
        np.testing.assert_array_equal(load_volume(tmp_path / "two" / n).data, a)
    assert not np.array_equal(arrays[0], arrays[1])  # volume i uses seed + i
    config = json.loads((tmp_path / "two" / "sample_config.json").read_text())
    assert config["files"] == names and config["seed"] == 4
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        [*names, "sample_config.json"]
    )


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    """torchrun with more processes per node than GPUs: each rank computes on cuda:LOCAL_RANK,
    so a rank past the last GPU says so in one line instead of failing inside CUDA."""
    import torch

    from realdeal.errors import ConfigError
    from realdeal.runtime.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(
        ConfigError, match=r"local rank 1 needs GPU cuda:1.*1 GPU\(s\).*nproc_per_node=1"
    ):
        resolve_device("auto", local_rank=1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # explicit index
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        resolve_device("cuda", local_rank=0)
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
