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


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_with_a_checkpoint_that_resumes_exactly(tmp_path, signame):
    """``timeout … realdeal train`` / Ctrl-C: the step finishes, a checkpoint is written at that
    step (not only at the last periodic one) and --resume continues as if never stopped."""
    import os
    import signal

    cfg = toy_config()
    full, _ = _run(tmp_path / "full", cfg)
    before = signal.getsignal(getattr(signal, signame))

    def send(step, loss):
        if step == 5:  # between the step-4 and step-6 checkpoints
            os.kill(os.getpid(), getattr(signal, signame))

    _, res = _run(tmp_path / "cut", cfg, on_step=send)
    assert (res.step, res.stopped_by) == (5, signame)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt").step == 5
    assert signal.getsignal(getattr(signal, signame)) == before  # handler restored
    resumed, res = _run(tmp_path / "cut", cfg, resume=True, model=toy_model(seed=99))
    assert (res.step, res.stopped_by) == (8, None)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


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
    assert TrainConfig(lr=0.5).lr_at(500) == 0.5  # constant is the default
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


def test_inference_auto_precision_is_bf16_where_the_hardware_has_it(monkeypatch):
    """Inference ``auto`` (refine's default): bf16 on a CUDA card with bf16 and on a CPU with
    native bf16 (both measured faster at the same quality), fp32 on a CPU that would emulate it."""
    from realdeal.runtime import device as dev

    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.inference_precision("auto", torch.device("cpu")) is torch.bfloat16
    assert dev.inference_precision("fp32", torch.device("cpu")) is None
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.inference_precision("auto", torch.device("cpu")) is None
    assert dev.inference_precision("bf16", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.inference_precision("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.inference_precision("auto", torch.device("cuda")) is None
    assert dev.inference_precision("fp32", torch.device("cuda")) is None


_GROUP_STOP_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from _toy_training import MODEL_CONFIG, ToyData, ToyTask, toy_config, toy_model
from realdeal.training.engine import train

def on_step(step, loss):
    if step == 3:
        print("running", flush=True)

res = train(ToyTask(), toy_model(), ToyData(), toy_config(steps=100000, checkpoint_every=100000,
            log_every=1000, num_workers=2), sys.argv[1], run_config={}, model_config=MODEL_CONFIG,
            on_step=on_step)
print("stopped", res.step, res.stopped_by, flush=True)
"""


@pytest.mark.slow
def test_sigterm_to_the_process_group_spares_data_workers_and_saves(tmp_path):
    """``timeout`` signals the whole process group: data-loading workers must not die of it
    (the loop would crash before saving); the main process stops at a step and saves."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _GROUP_STOP_SCRIPT,
            str(tmp_path / "run"),
            str(Path(__file__).parent),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under `timeout`
    )
    try:
        assert proc.stdout.readline().strip() == "running"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    _, step, by = out.split()
    assert by == "SIGTERM" and int(step) >= 3
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.step == int(step)
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert recs[-1]["step"] == int(step)  # the partial window is logged on stopping


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs CUDA: resuming loads the checkpoint onto the GPU, RNG byte tensors included "
    "(failed on an H100 on 2026-11-27: 'RNG state must be a torch.ByteTensor')",
)
def test_a_run_resumes_on_cuda(tmp_path):
    cfg = toy_config(device="cuda", steps=4)
    _run(tmp_path / "r", toy_config(device="cuda", steps=2))
    _, res = _run(tmp_path / "r", cfg, resume=True)
    assert res.step == 4


def test_init_from_starts_a_new_schedule_from_earlier_ema_weights(tmp_path):
    """Fine-tuning: weights (EMA where stored) from a full or slim checkpoint, fresh optimizer,
    schedule and EMA; a network that does not match is refused."""
    _run(tmp_path / "a", toy_config(steps=4))
    src = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    slim = tmp_path / "slim.pt"
    from realdeal.runtime.checkpoint import save_checkpoint

    save_checkpoint(slim, src.slimmed())
    for start in (tmp_path / "a" / "checkpoint.pt", slim):
        cfg = toy_config(steps=1, lr=1e-30, weight_decay=0.0, init_from=str(start))
        model, res = _run(tmp_path / f"b-{start.stem}", cfg, model=toy_model(seed=5))
        assert res.step == 1  # a new run, counted from 0
        for (
            k,
            v,
        ) in (
            model.state_dict().items()
        ):  # lr 1e-30 (below float resolution): the source's EMA weights
            assert torch.equal(v, src.ema[k]), k
        b = load_checkpoint(tmp_path / f"b-{start.stem}" / "checkpoint.pt")
        assert b.ema_updates == 1 and all(torch.equal(b.ema[k], src.ema[k]) for k in src.ema)

    with pytest.raises(InputError, match="no such checkpoint"):
        _run(tmp_path / "c", toy_config(init_from=str(tmp_path / "missing.pt")))
    other = dict(MODEL_CONFIG, width=8)
    with pytest.raises(InputError):
        train(ToyTask(), toy_model(), ToyData(), toy_config(init_from=str(slim)), tmp_path / "d",
              run_config={}, model_config=other)  # fmt: skip


def test_snapshots_keep_the_ema_weights_of_every_nth_step(tmp_path):
    """``snapshot_every`` keeps slim EMA snapshots; the last one equals the final EMA weights."""
    _run(tmp_path / "r", toy_config(steps=6, checkpoint_every=3, snapshot_every=2))
    snaps = sorted((tmp_path / "r" / "snapshots").glob("step-*.pt"))
    assert [p.name for p in snaps] == [f"step-{s:07d}.pt" for s in (2, 4, 6)]
    last, final = load_checkpoint(snaps[-1]), load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert last.slim and last.step == 6 and not last.resumable
    for k, v in final.weights().items():
        torch.testing.assert_close(last.weights()[k], v, rtol=0, atol=0)
    first = load_checkpoint(snaps[0])
    assert any(not torch.equal(first.weights()[k], v) for k, v in final.weights().items())
    with pytest.raises(ConfigError, match="snapshot_every"):
        toy_config(snapshot_every=-1)


class _PoisonedTask(ToyTask):
    """ToyTask whose loss is NaN at the steps in ``bad`` (counted by calls)."""

    def __init__(self, bad):
        self.bad, self.calls = set(bad), 0

    def loss(self, model, batch):
        self.calls += 1
        loss = super().loss(model, batch)
        return loss * float("nan") if self.calls in self.bad else loss


def test_a_non_finite_gradient_skips_its_step_and_a_streak_stops_the_run(tmp_path, caplog):
    from realdeal.errors import TrainingDiverged

    cfg = toy_config(steps=30, checkpoint_every=4)
    # one bad step: skipped (no weight, EMA or optimizer change), the run goes on
    model = toy_model()
    train(_PoisonedTask({3}), model, ToyData(), cfg, tmp_path / "one", run_config={"toy": True},
          model_config=MODEL_CONFIG)  # fmt: skip
    ckpt = load_checkpoint(tmp_path / "one" / "checkpoint.pt", kind="autoencoder")
    assert ckpt.step == 30 and ckpt.ema_updates == 29
    assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())
    assert "step 3: gradient not finite" in caplog.text
    # a streak from step 6 on: stopped after MAX_NONFINITE_STEPS, weights as after step 5 (also
    # in the checkpoints of steps 8 and 12, written while the steps were skipped)
    model = toy_model()
    with pytest.raises(TrainingDiverged, match=r"not finite in 10 steps in a row from step 6 .* "
                       r"checkpoint holds step 12"):  # fmt: skip
        train(_PoisonedTask(range(6, 100)), model, ToyData(), cfg, tmp_path / "streak",
              run_config={"toy": True}, model_config=MODEL_CONFIG)  # fmt: skip
    ref, _ = _run(tmp_path / "ref", toy_config(steps=5, checkpoint_every=4))
    for v, w in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(v, w)
    ckpt = load_checkpoint(tmp_path / "streak" / "checkpoint.pt", kind="autoencoder")
    assert ckpt.step == 12
    for k, v in ref.state_dict().items():
        assert torch.equal(ckpt.model[k], v)
