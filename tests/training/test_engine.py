"""The training engine: exact resumption, accumulation, EMA, run-directory hygiene."""

from __future__ import annotations

import pytest
import torch
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config, toy_model

from realdeal.errors import ConfigError, InputError
from realdeal.runtime.checkpoint import load_checkpoint
from realdeal.training.engine import TrainConfig, read_metrics, train


class Killed(Exception):
    pass


def _run(out, cfg, resume=False, on_step=None, model=None):
    model = model or toy_model()
    res = train(
        ToyTask(),
        model,
        ToyData(),
        cfg,
        out,
        run_config={"toy": True},
        model_config=MODEL_CONFIG,
        resume=resume,
        on_step=on_step,
    )
    return model, res


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    cfg = toy_config()
    full, _ = _run(tmp_path / "full", cfg)

    def kill(step, loss):
        if step == 5:  # after the step-4 checkpoint, before the step-6 one
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path / "cut", cfg, on_step=kill)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt").step == 4
    resumed, res = _run(tmp_path / "cut", cfg, resume=True, model=toy_model(seed=99))
    assert res.step == 8

    a = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    b = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")]
    assert [s for s, _ in a] == list(range(1, 9))
    assert a == b  # same losses step for step (log dropped the killed run's step 5)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    ea = load_checkpoint(tmp_path / "full" / "checkpoint.pt").ema
    eb = load_checkpoint(tmp_path / "cut" / "checkpoint.pt").ema
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_training_lowers_the_loss_and_ema_lags(tmp_path):
    cfg = toy_config(steps=30, lr=3e-2, log_every=5, checkpoint_every=100)
    model, _ = _run(tmp_path, cfg)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.7 * losses[0]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", kind="autoencoder")
    assert ckpt.step == 30 and ckpt.ema_updates == 30
    w, e = model.state_dict()["0.weight"], ckpt.ema["0.weight"]
    assert not torch.equal(w, e) and (w - e).abs().max() < 0.5


def test_gradient_accumulation_matches_full_batch(tmp_path):
    a, _ = _run(tmp_path / "a", toy_config(steps=3, grad_accum=1))
    b, _ = _run(tmp_path / "b", toy_config(steps=3, grad_accum=2))
    for v, w in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a, _ = _run(tmp_path / "a", toy_config(steps=3))
    b, _ = _run(tmp_path / "b", toy_config(steps=3))
    c, _ = _run(tmp_path / "c", toy_config(steps=3, seed=1))
    assert all(
        torch.equal(v, w)
        for v, w in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_existing_checkpoint_needs_resume_and_matching_model(tmp_path):
    _run(tmp_path, toy_config(steps=2))
    with pytest.raises(InputError, match="--resume"):
        _run(tmp_path, toy_config(steps=2))
    with pytest.raises(InputError, match="different autoencoder architecture"):
        train(
            ToyTask(),
            toy_model(),
            ToyData(),
            toy_config(steps=4),
            tmp_path,
            run_config={},
            model_config={"name": "toy", "width": 8},
            resume=True,
        )


def test_bad_batch_split_is_a_config_error(tmp_path):
    from realdeal.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        _run(tmp_path, toy_config(batch_size=3, grad_accum=2))


def test_cosine_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, lr_decay="cosine", min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s) for s in range(1, 111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # non-increasing
    assert lrs[59] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lrs[-1] == pytest.approx(0.1)
    assert TrainConfig(lr=2.0).lr_at(500) == 2.0  # constant is the default
    with pytest.raises(ConfigError):
        TrainConfig(lr_decay="linear")


def test_auto_precision_picks_bf16_only_with_native_bf16_instructions(monkeypatch):
    """oneDNN says 'bf16 supported' on plain AVX-512, where bf16 is emulated and ~3x slower."""
    from pathlib import Path

    from realdeal.runtime import device as engine

    def cpuinfo(flags: str):
        text = (
            f"processor\t: 0\nflags\t\t: fpu sse avx2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
        )
        monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text)
        return engine.cpu_has_native_bf16.__wrapped__()

    assert cpuinfo("avx512f avx512bw") is False
    assert cpuinfo("avx512f avx512_bf16") is True
    assert cpuinfo("amx_tile amx_bf16") is True
    monkeypatch.undo()
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert engine.resolve_precision("auto", torch.device("cpu")) == (None, False)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert engine.resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16, False)
