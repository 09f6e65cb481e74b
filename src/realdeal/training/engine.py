"""The one training engine for the autoencoder, the LDM and the refiner.

A model kind plugs in a :class:`TrainTask` (how a batch becomes a loss) and a map-style
dataset whose items are addressed by ``(index, seed)``; the engine owns everything else:
AdamW, mixed precision, EMA, gradient clipping and accumulation, DDP, progress bar, JSONL
metrics, atomic checkpoints and exact resumption.

Determinism: the ``g``-th sample of a run (counted over optimizer steps, ranks and
accumulation micro-batches) is item ``perm_e[g mod N]`` of a permutation seeded by
``(seed, epoch e)``, and all randomness for that sample (crop position, noise, timestep) is
drawn from its own seed. A run therefore depends only on ``(seed, step)``: a killed run
resumed from its last checkpoint reproduces the uninterrupted one, and a 2-process run sees
the same samples as a 1-process run with the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from realdeal.errors import ConfigError, InputError, TrainingDiverged
from realdeal.presets import TrainConfig
from realdeal.runtime.checkpoint import (
    check_model_config,
    checkpoint_class,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from realdeal.runtime.device import (
    autocast_context,
    device_label,
    resolve_precision,
)
from realdeal.runtime.rng import (
    generator_for,
    rng_state,
    sample_seed,
    seed_everything,
    set_rng_state,
)
from realdeal.training.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    exact_mean_hook,
    exclusive_folder,
    init_distributed,
)
from realdeal.training.ema import EMA
from realdeal.training.run_folder import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    resume_conflicts,
    resume_refusal,
)
from realdeal.utils.fs import write_text_atomic

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = "snapshots"


class TrainTask(Protocol):
    """What a model kind contributes to the engine."""

    kind: str

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of one micro-batch; ``batch["seed"]`` ``(B,)`` holds per-sample seeds."""
        ...


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run leaves: final step, last logged loss, files."""

    step: int
    loss: float
    checkpoint: Path
    metrics: Path
    stopped_by: str | None = None
    """The signal's name (``SIGTERM``/``SIGINT``) if the run stopped early on one, else None."""


# --------------------------------------------------------------------------- data order


class StepBatchSampler:
    """Yields this rank's micro-batches of ``(index, seed)`` pairs from optimizer step ``start``."""

    def __init__(
        self, n_items: int, cfg: TrainConfig, dist: DistInfo, start_step: int, end_step: int
    ):
        per = cfg.batch_size // (dist.world_size * cfg.grad_accum)
        if n_items < 1:
            raise ConfigError("no training items")
        if per * dist.world_size * cfg.grad_accum != cfg.batch_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} must be divisible by world_size × grad_accum "
                f"= {dist.world_size} × {cfg.grad_accum}"
            )
        self.n, self.cfg, self.dist, self.per = n_items, cfg, dist, per
        self.start, self.end = start_step, end_step
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _item(self, g: int) -> int:
        epoch, pos = divmod(g, self.n)
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(
                self.n, generator=generator_for(self.cfg.seed * 7_777 + epoch)
            )
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        B, W, m = self.cfg.batch_size, self.dist.world_size, self.per
        for step in range(self.start, self.end):
            for a in range(self.cfg.grad_accum):
                g0 = step * B + a * W * m + self.dist.rank * m
                yield [(self._item(g), sample_seed(self.cfg.seed, g)) for g in range(g0, g0 + m)]

    def __len__(self) -> int:
        return (self.end - self.start) * self.cfg.grad_accum


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    out = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    return out


# --------------------------------------------------------------------------- engine


class _MetricsLog:
    """Append-only JSONL on rank 0; on resume, lines after the resumed step are dropped.

    Each record is one ``write()`` of a whole line to a file opened for appending, then
    flushed, so a reader never sees half a record unless the process died inside that call;
    such a torn last line is dropped (with a warning) when the run resumes, and skipped by the
    readers (:func:`read_metrics`, :func:`realdeal.report.run.read_metrics_jsonl`)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            write_text_atomic(self.path, "")
        elif self.path.exists():
            keep = [
                line
                for line, rec in _metrics_lines(self.path)
                if rec is not None and _step_of(rec) <= resume_step
            ]
            write_text_atomic(self.path, "".join(ln + "\n" for ln in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            data = (json.dumps(record) + "\n").encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                written = os.write(fd, data)
                while written < len(data):  # a short write (full disk, signal): the rest
                    written += os.write(fd, data[written:])
            finally:
                os.close(fd)


def _step_of(rec: dict[str, Any]) -> float:
    step = rec.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else 0


def _metrics_lines(path: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """``(line, record)`` of every non-blank line of a metrics file; a torn last line (no
    newline and not a whole JSON record: the writer died mid-line) is left out with a warning,
    any other line that is not a JSON object raises :class:`InputError` naming the line."""
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    last_complete = text.endswith("\n")
    out: list[tuple[str, dict[str, Any] | None]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            if i == len(lines) and not last_complete:
                log.warning("%s: skipping its torn last line %d (a write was cut short)", path, i)
                continue
            raise InputError(path, f"line {i} is not a JSON record ({line[:40]!r})")
        out.append((line, rec))
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics JSONL file (a torn last line skipped with a warning)."""
    return [rec for _, rec in _metrics_lines(Path(path)) if rec is not None]


def train(
    task: TrainTask,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    run_config: dict[str, Any],
    model_config: dict[str, Any],
    preset: str = "custom",
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``task``'s loss; write checkpoints/metrics in ``out_dir``.

    ``dataset[(index, seed)]`` returns one sample as a dict of tensors. ``run_config`` (the
    resolved config) and ``model_config`` (the network's) are stored in every checkpoint;
    ``extra`` holds the kind's own checkpoint fields (e.g. an LDM's ``latent_scaling``; see
    :mod:`realdeal.runtime.checkpoint`). With ``resume`` the run continues from
    ``out_dir/checkpoint.pt`` if it exists, provided ``run_config`` differs from the
    checkpoint's only in :data:`~realdeal.training.run_folder.RESUMABLE_FIELDS`; without it an
    existing checkpoint is an error. Rank 0 is the one writer of ``out_dir`` while it trains
    (:func:`~realdeal.training.distributed.exclusive_folder`; the ``train_*`` functions take
    it earlier, with :func:`~realdeal.training.run_folder.open_run`, before they write).
    ``on_step(step, loss)`` is called on every rank after each optimizer step.
    """
    out_dir = Path(out_dir)
    dist = dist or init_distributed(cfg.device)
    ckpt_path = out_dir / CHECKPOINT_NAME

    def check() -> None:
        if ckpt_path.exists() and not resume:
            raise InputError(
                out_dir,
                "already holds a checkpoint; pass --resume to continue it or choose another --out",
            )

    with exclusive_folder(out_dir, dist, check, check_first=True):
        return _train(
            task, model, dataset, cfg, out_dir, run_config, model_config, preset, resume,
            extra, dist, on_step,
        )  # fmt: skip


def _train(
    task: TrainTask,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    out_dir: Path,
    run_config: dict[str, Any],
    model_config: dict[str, Any],
    preset: str,
    resume: bool,
    extra: dict[str, Any] | None,
    dist: DistInfo,
    on_step: Callable[[int, float], None] | None,
) -> TrainResult:
    ckpt_path, metrics_path = out_dir / CHECKPOINT_NAME, out_dir / METRICS_NAME
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    run = _setup(
        task.kind, model, cfg, dist, ckpt_path if resume else None, model_config, run_config
    )
    if hasattr(task, "draws"):
        dataset = _WithDraws(dataset, task.draws)
    stored = dict(
        preset=preset, config=run_config, model_config=model_config, init_steps=run.init_steps,
        **(extra or {}),
    )  # fmt: skip
    sampler = StepBatchSampler(len(dataset), cfg, dist, run.start, cfg.steps)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=_collate,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=_ignore_stop_signals if cfg.num_workers else None,
    )
    metrics = _MetricsLog(metrics_path, dist.is_main, run.start if resume else None)
    steplog = _StepLog(task.kind, cfg, dist, run.start, metrics)
    batches = iter(loader)
    step = run.start
    run.model.train()
    bad = _NonFinite(task.kind, saved=run.start)
    with _StopOnSignal(enabled=not dist.distributed) as stop:
        for step in range(run.start + 1, cfg.steps + 1):
            step_loss, lr, grad_norm, skipped = _optimizer_step(run, task, cfg, batches, step)
            bad.check(step, skipped, grad_norm)
            if on_step is not None:
                on_step(step, float(step_loss))
            steplog.record(step, step_loss, lr, grad_norm, flush=stop.signal is not None)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.signal:
                _save(ckpt_path, task.kind, run, step, stored)
                bad.saved = step
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                snap = out_dir / SNAPSHOTS_DIR / f"step-{step:07d}.pt"
                _snapshot(snap, task.kind, run, step, stored)
            if stop.signal:
                log.warning(
                    "%s: stopped at step %d of %d; checkpoint saved, continue with --resume",
                    stop.signal, step, cfg.steps,
                )  # fmt: skip
                break
    steplog.close()
    if run.start >= cfg.steps:
        log.info("%s already trained for %d steps; nothing to do", task.kind, run.start)
    return TrainResult(
        step=step if cfg.steps > run.start else run.start,
        loss=steplog.last_loss,
        checkpoint=ckpt_path,
        metrics=metrics_path,
        stopped_by=stop.signal,
    )


class _WithDraws(torch.utils.data.Dataset):
    """``dataset``'s items plus the task's per-sample random draws (noise, timestep), made with
    the item, in the data-loading workers when there are any. The numbers depend on the item's
    seed alone, so they equal what the task would draw for the batch itself
    (:func:`realdeal.runtime.rng.batch_draws`)."""

    def __init__(self, dataset: torch.utils.data.Dataset, draws: Callable[[dict], dict]):
        self.dataset, self.draws = dataset, draws

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        item = self.dataset[key]
        return {**item, **self.draws(item)}


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loading workers ignore SIGTERM/SIGINT: ``timeout`` and Ctrl-C signal the whole
    process group, and a worker killed by them would crash the loop before the main process
    saves its checkpoint (workers end with the main process anyway)."""
    for s in _StopOnSignal.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class _StopOnSignal:
    """While active, SIGTERM/SIGINT only set :attr:`signal`: the loop finishes its step, saves
    a checkpoint and returns (``timeout 300 realdeal train …`` or Ctrl-C stop a run cleanly, to
    be continued with ``--resume``). A second signal acts as usual. Only in the main thread of a
    single-process run: under torchrun ranks would stop at different steps and the checkpoint's
    collective save would hang, so there the signal acts as usual (the last periodic checkpoint
    is the resume point)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        for s, old in self._old.items():  # a second signal acts as it did before
            signal.signal(s, old)

    def __enter__(self) -> _StopOnSignal:
        if self.enabled:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


@dataclasses.dataclass
class _Run:
    """The state a run trains: the network, its EMA, optimizer and gradient scaler."""

    model: nn.Module
    """The network itself (its state dicts are stored)."""
    train_model: nn.Module
    """What computes the loss: ``model``, or its DDP wrapper under torchrun."""
    params: list[nn.Parameter]
    ema: EMA
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    use_scaler: bool
    dist: DistInfo
    start: int
    """Optimizer steps already done (from the resumed checkpoint)."""
    init_steps: int = 0
    """Steps the starting weights (``init_from``) had been trained, along their whole chain;
    stored in every checkpoint of the run (:attr:`Checkpoint.init_steps`)."""


def _setup(
    kind: str,
    model: nn.Module,
    cfg: TrainConfig,
    dist: DistInfo,
    resume_from: Path | None,
    model_config: dict[str, Any],
    run_config: dict[str, Any] | None = None,
) -> _Run:
    """Place ``model``, build EMA/optimizer/scaler and resume them from ``resume_from`` if it
    exists (else seed this rank's RNGs)."""
    device = dist.device
    amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    if dist.distributed and device.type == "cuda":
        # batch statistics over the global batch, as in a single-process run (same state keys)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    params = [p for p in model.parameters() if p.requires_grad]
    run = _Run(
        model=model,
        train_model=model,
        params=params,
        ema=EMA(model, cfg.ema_decay),
        opt=torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        amp_dtype=amp_dtype,
        use_scaler=use_scaler,
        dist=dist,
        start=0,
    )
    if resume_from is not None and resume_from.exists():
        run.start = _resume(resume_from, kind, run, model_config, run_config)
    else:
        if cfg.init_from:
            _init_weights(resolve_checkpoint(cfg.init_from), kind, run, model_config)
        seed_everything(cfg.seed + dist.rank)
    if dist.distributed:
        run.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        if device.type == "cpu":  # resumes bit for bit on any number of ranks
            run.train_model.register_comm_hook(None, exact_mean_hook)
    return run


def _init_weights(path: Path, kind: str, run: _Run, model_config: dict[str, Any]) -> None:
    """Load the (EMA) weights of ``path`` into the network and its EMA (``init_from``); the
    run records the steps those weights had (:attr:`Checkpoint.total_steps` of ``path``)."""
    if not path.is_file():
        raise InputError(path, "no such checkpoint to start from (--init-from)")
    ckpt = load_checkpoint(path, kind=kind, map_location=run.dist.device)
    check_model_config(path, ckpt, model_config)
    run.model.load_state_dict(ckpt.weights())
    run.ema.load_state_dict(run.model.state_dict(), 0)
    run.init_steps = ckpt.total_steps
    log.info(
        "%s starts from the weights of %s (its step %d; %d steps in all)",
        kind, path, ckpt.step, ckpt.total_steps,
    )  # fmt: skip


def _resume(
    path: Path,
    kind: str,
    run: _Run,
    model_config: dict[str, Any],
    run_config: dict[str, Any] | None = None,
) -> int:
    """Load weights, EMA, optimizer, scaler and this rank's RNG state; the checkpoint's step.

    A ``run_config`` that differs from the checkpoint's beyond what a resumed run may change
    is refused (:func:`~realdeal.training.run_folder.resume_conflicts`)."""
    ckpt = load_checkpoint(path, kind=kind, map_location=run.dist.device)
    check_model_config(path, ckpt, model_config)
    if run_config is not None and (conflicts := resume_conflicts(ckpt.config, run_config)):
        raise InputError(path.parent, resume_refusal(conflicts))
    if ckpt.slim:
        raise InputError(
            path,
            "is an inference-only checkpoint (EMA weights, no optimizer state) and cannot "
            "resume training; train into another --out",
        )
    if not ckpt.resumable or ckpt.ema is None or ckpt.ema_updates is None:
        raise InputError(path, "holds no training state (optimizer, RNG) to resume from")
    run.model.load_state_dict(ckpt.model)
    run.ema.load_state_dict(ckpt.ema, ckpt.ema_updates)
    run.init_steps = ckpt.init_steps
    run.opt.load_state_dict(ckpt.optimizer)  # type: ignore[arg-type]
    if run.use_scaler and ckpt.grad_scaler:
        run.scaler.load_state_dict(ckpt.grad_scaler)
    rng = ckpt.rng
    assert isinstance(rng, list)
    set_rng_state(rng[run.dist.rank] if run.dist.rank < len(rng) else rng[0])
    log.info("resumed %s from %s at step %d", kind, path, ckpt.step)
    return ckpt.step


def _optimizer_step(
    run: _Run,
    task: TrainTask,
    cfg: TrainConfig,
    batches: Iterator[dict[str, torch.Tensor]],
    step: int,
) -> tuple[torch.Tensor, float, torch.Tensor, bool]:
    """One optimizer step (``grad_accum`` micro-batches): (summed loss, lr, gradient norm,
    skipped). A non-finite gradient would turn every weight into NaN: its step is skipped (no
    weight, EMA or optimizer change; ``skipped``), as fp16's GradScaler does by itself."""
    device, dist = run.dist.device, run.dist
    lr = cfg.lr_at(step)
    for group in run.opt.param_groups:
        group["lr"] = lr
    step_loss = torch.zeros((), device=device)
    for a in range(cfg.grad_accum):
        batch = {
            k: _to_device(v, device, cfg.channels_last) if k != "seed" else v
            for k, v in next(batches).items()
        }
        sync = (
            nullcontext()
            if (not dist.distributed or a == cfg.grad_accum - 1)
            else run.train_model.no_sync()
        )
        with sync:
            with autocast_context(run.amp_dtype, device):
                loss = task.loss(run.train_model, batch) / cfg.grad_accum
            run.scaler.scale(loss).backward()
        step_loss += loss.detach().float()
    if run.use_scaler:
        run.scaler.unscale_(run.opt)
    clip = cfg.grad_clip if cfg.grad_clip else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, clip)
    if not run.use_scaler and not bool(torch.isfinite(grad_norm)):
        run.opt.zero_grad(set_to_none=True)
        return step_loss, lr, grad_norm, True
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    run.ema.update(run.model)
    return step_loss, lr, grad_norm, False


MAX_NONFINITE_STEPS = 10
"""Consecutive steps with a non-finite gradient (each skipped) after which a run stops."""


class _NonFinite:
    """Counts the steps :func:`_optimizer_step` skipped for a non-finite gradient: warns at the
    first of a streak and raises :class:`TrainingDiverged` after :data:`MAX_NONFINITE_STEPS`
    in a row. ``saved``: the step of the checkpoint on disk."""

    def __init__(self, kind: str, saved: int):
        self.kind, self.saved, self.streak, self.first = kind, saved, 0, 0

    def check(self, step: int, skipped: bool, grad_norm: torch.Tensor) -> None:
        if not skipped:
            self.streak = 0
            return
        if self.streak == 0:
            self.first = step
            log.warning("%s: step %d: gradient not finite (%s); step skipped", self.kind, step,
                        float(grad_norm))  # fmt: skip
        self.streak += 1
        if self.streak >= MAX_NONFINITE_STEPS:
            raise TrainingDiverged(
                f"{self.kind} training diverged: the gradient was not finite in {self.streak} "
                f"steps in a row from step {self.first} (each skipped, no weight changed); the "
                f"checkpoint holds step {self.saved}. Lower --lr, or train with "
                "--precision fp32"
            )


class _StepLog:
    """Progress bar and the metrics log: the mean loss over every ``log_every`` steps."""

    def __init__(
        self, kind: str, cfg: TrainConfig, dist: DistInfo, start: int, metrics: _MetricsLog
    ):
        from realdeal.utils.progress import progress

        self.cfg, self.dist, self.metrics = cfg, dist, metrics
        self.bar = (
            progress(total=cfg.steps, desc=f"train {kind}", unit="step", initial=start)
            if dist.is_main
            else None
        )
        self.where = device_label(dist.device, dist.world_size)
        self.last_loss = float("nan")
        self._reset()

    def _reset(self) -> None:
        self.window_loss = torch.zeros((), device=self.dist.device)
        self.window_n, self.t0 = 0, time.perf_counter()

    def record(
        self,
        step: int,
        step_loss: torch.Tensor,
        lr: float,
        grad_norm: torch.Tensor,
        flush: bool = False,
    ) -> None:
        """Count step ``step``; every ``log_every`` steps, the last, and when ``flush`` (a run
        stopping early) write a metrics line."""
        self.window_loss += step_loss
        self.window_n += 1
        if step % self.cfg.log_every == 0 or step == self.cfg.steps or flush:
            mean_loss = float(all_reduce_mean(self.window_loss / self.window_n, self.dist))
            dt = time.perf_counter() - self.t0
            self.metrics.write(
                {
                    "step": step,
                    "loss": mean_loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "samples_per_s": self.window_n * self.cfg.batch_size / max(dt, 1e-9),
                    "time": time.time(),
                    "device": self.where,
                }
            )
            self.last_loss = mean_loss
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{mean_loss:.4g}")
            self._reset()
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _save(path: Path, kind: str, run: _Run, step: int, stored: dict[str, Any]) -> None:
    """Write the resumable checkpoint of step ``step`` (rank 0; every rank's RNG state)."""
    rng = _gather_rng(run.dist)
    if run.dist.is_main:
        payload = checkpoint_class(kind)(
            **stored,
            step=step,
            model=run.model.state_dict(),
            ema=run.ema.state_dict(),
            ema_updates=run.ema.num_updates,
            optimizer=run.opt.state_dict(),
            grad_scaler=run.scaler.state_dict() if run.use_scaler else {},
            rng=rng,
        )
        save_checkpoint(path, payload)
    barrier(run.dist)


def _snapshot(path: Path, kind: str, run: _Run, step: int, stored: dict[str, Any]) -> None:
    """Write the slim EMA weights of step ``step`` (rank 0; atomically)."""
    if run.dist.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = checkpoint_class(kind)(
            **stored,
            step=step,
            model=run.model.state_dict(),
            ema=run.ema.state_dict(),
            ema_updates=run.ema.num_updates,
        )
        save_checkpoint(path, payload.slimmed())


def _to_device(v: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    v = v.to(device, non_blocking=True)
    return (
        v.contiguous(memory_format=torch.channels_last_3d) if channels_last and v.ndim == 5 else v
    )


def _gather_rng(dist: DistInfo) -> list[dict[str, torch.Tensor]]:
    """Every rank's RNG state (rank 0 stores all of them)."""
    state = rng_state()
    if not dist.distributed:
        return [state]
    import torch.distributed as tdist

    gathered: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(gathered, state)
    return gathered
