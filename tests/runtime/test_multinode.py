"""Several nodes, simulated on this machine: two ``torchrun --nnodes 2 --nproc-per-node 2``
launches meeting through the c10d rendezvous on the loopback address (CPU, gloo), as one
launch per node does on a cluster. Training equals a single-node run with the same global
batch; refinement equals one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from realdeal.data.io import load_volume
from test_torchrun import FLAGS, run_nodes, run_realdeal
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

# The tiny autoencoder of the training tests, with GroupNorm: BatchNorm (the paper's) would
# normalise each rank's micro-batch on its own, which gloo cannot synchronise.
TRAIN = ["train", "autoencoder", "--preset", "cpu-small", "--channels", "4", "8", "8",
         "--bottleneck", "4", "--norm", "group", "--crop", "16", "16", "16", "--steps", "4",
         "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "2", "--precision",
         "fp32", "--device", "cpu", "--workers", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from synthetic import prepared_phantoms

    return prepared_phantoms(tmp_path_factory.mktemp("ds"), 5, 0.2)


def _ok(nodes) -> None:
    for n, proc in enumerate(nodes):
        assert proc.returncode == 0, f"node {n}:\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_the_same_global_batch(prepared, tmp_path):
    """2 nodes × 2 processes and 1 node × 4 processes, global batch 4 (one sample per rank):
    the same weights, EMA, optimizer state and losses after 4 steps, bit for bit; and one
    run folder written by rank 0 only."""
    nodes = run_nodes([*TRAIN, "--data", str(prepared), "-o", str(tmp_path / "two-nodes")])
    _ok(nodes)
    joined = "".join(p.stderr for p in nodes)
    assert all(f"rank {r}/4 on node {r // 2} joined" in joined for r in range(4)), joined[-2000:]
    one = run_realdeal([*TRAIN, "--data", str(prepared), "-o", str(tmp_path / "one-node")], 4)
    assert one.returncode == 0, one.stderr[-3000:]

    a = torch.load(tmp_path / "two-nodes" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "one-node" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for part in ("model", "ema"):
        for k, v in b[part].items():
            assert torch.equal(a[part][k], v), (part, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sb)
    assert not all(torch.equal(v, a["ema"][k]) for k, v in a["model"].items())  # it trained

    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").open()]
        for d in ("two-nodes", "one-node")
    ]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert sorted(p.name for p in (tmp_path / "two-nodes").iterdir()) == sorted(
        p.name for p in (tmp_path / "one-node").iterdir()
    )  # rank 0 wrote the run folder; the ranks of node 1 left nothing beside it


@pytest.mark.slow
def test_two_nodes_refine_like_one_process(tmp_path):
    """4 ranks on 2 nodes split 4 volumes (one group each): the outputs equal one process's,
    and rank 0 (on node 0) writes refine.json for all of them."""
    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    files = coarse_volumes(tmp_path / "in", 4)
    flags = [*FLAGS[: FLAGS.index("--batch-volumes")], "--batch-volumes", "1", "--device", "cpu"]
    args = ["refine", str(tmp_path / "in"), "--checkpoint", str(ckpt), *flags]
    nodes = run_nodes([*args, "-o", str(tmp_path / "nodes")])
    _ok(nodes)
    one = run_realdeal([*args, "-o", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    for f in files:
        got = load_volume(tmp_path / "nodes" / f.name).data
        want = load_volume(tmp_path / "one" / f.name).data
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(want, load_volume(f).data)
    report = json.loads((tmp_path / "nodes" / "refine.json").read_text())
    assert report["processes"] == 4
    assert [v["input"] for v in report["volumes"]] == [str(f) for f in files]
    printed = [p.stdout for p in nodes]  # rank 0 prints the volumes' lines, and only it
    assert sorted(sum(".nii.gz:" in line for line in out.splitlines()) for out in printed) == [0, 4]
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == sorted(
        [f.name for f in files] + ["refine.json"]
    )


def test_a_rank_knows_its_node(monkeypatch):
    """torchrun's GROUP_RANK and LOCAL_WORLD_SIZE reach DistInfo, and messages name the node
    once the job spans several (the process group itself is not joined here)."""
    import torch.distributed as dist

    from realdeal.runtime.distributed import init_distributed

    joined = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: joined.append(kw))
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "GROUP_RANK": "1"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    info = init_distributed("cpu")
    assert (info.rank, info.local_rank, info.local_world_size, info.node_rank) == (3, 1, 2, 1)
    assert info.where() == "rank 3/4 on node 1" and joined == [{"backend": "gloo"}]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # one node
    monkeypatch.setenv("GROUP_RANK", "0")
    assert init_distributed("cpu").where() == "rank 3/4"


def test_an_error_crosses_ranks_as_its_class_and_message():
    """Errors travel between ranks (and pool workers) as plain data: InputError(path, problem)
    itself does not survive pickling."""
    import pickle

    from realdeal.errors import InputError
    from realdeal.metrics.subjects import MissingRegionError
    from realdeal.runtime.distributed import Failure, broadcast_error

    original = MissingRegionError("/data/sub-01.nii.gz", "no voxel of white_matter")
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(original))
    again = pickle.loads(pickle.dumps(Failure.of(original))).error()
    assert type(again) is MissingRegionError and isinstance(again, InputError)
    assert str(again) == str(original) == "/data/sub-01.nii.gz: no voxel of white_matter"
    with pytest.raises(MissingRegionError, match="white_matter"):
        broadcast_error(again, None)  # one process: raised as it is
    broadcast_error(None, None)
