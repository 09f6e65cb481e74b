"""Lineage of fine-tuned models: a checkpoint knows the steps its starting weights had."""

from __future__ import annotations

import torch
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config, toy_model

from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint
from realdeal.training.engine import train


def _train(out, resume=False, **cfg):
    return train(ToyTask(), toy_model(), ToyData(), toy_config(**cfg), out,
                 run_config={"toy": True}, model_config=MODEL_CONFIG, resume=resume)  # fmt: skip


def test_init_steps_add_up_along_a_chain_of_fine_tunes(tmp_path):
    _train(tmp_path / "a", steps=4)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert (a.step, a.init_steps, a.total_steps) == (4, 0, 4)

    _train(tmp_path / "b", steps=3, init_from=str(tmp_path / "a" / "checkpoint.pt"))
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (b.step, b.init_steps, b.total_steps) == (3, 4, 7)

    # from b's slim export: the export keeps the record, and c adds b's whole history
    slim = save_checkpoint(tmp_path / "b-slim.pt", b.slimmed())
    assert load_checkpoint(slim).init_steps == 4
    _train(tmp_path / "c", steps=2, init_from=str(slim))
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    assert (c.step, c.init_steps, c.total_steps) == (2, 7, 9)

    # resuming keeps the record (the run's own steps go on from its checkpoint)
    _train(tmp_path / "c", steps=5, init_from=str(slim), resume=True)
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    assert (c.step, c.init_steps, c.total_steps) == (5, 7, 12)

    # snapshots, like every checkpoint of the run, carry it too
    _train(tmp_path / "d", steps=2, snapshot_every=2, init_from=str(slim))
    snap = load_checkpoint(next((tmp_path / "d" / "snapshots").glob("step-*.pt")))
    assert snap.slim and snap.total_steps == 7 + 2


def test_older_checkpoints_read_as_trained_from_scratch(tmp_path):
    _train(tmp_path / "a", steps=2)
    path = tmp_path / "a" / "checkpoint.pt"
    raw = torch.load(path, weights_only=True)
    assert "init_steps" not in raw  # written only when not 0: older files look the same
    ckpt = load_checkpoint(path)
    assert ckpt.init_steps == 0 and ckpt.total_steps == ckpt.step == 2


def test_the_pipelines_expose_the_total(tmp_path):
    from realdeal.pipelines.refiner import RefinerPipeline
    from tiny_refiner import tiny_refiner_checkpoint

    path = tiny_refiner_checkpoint(tmp_path / "r.pt")
    ckpt = load_checkpoint(path)
    ckpt.step, ckpt.init_steps = 1000, 2400
    save_checkpoint(path, ckpt)
    pipe = RefinerPipeline.from_checkpoint(path)
    assert pipe.checkpoint.step == 1000 and pipe.checkpoint.total_steps == 3400
