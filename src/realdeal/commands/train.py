"""``realdeal train {autoencoder,ldm,refiner}``: train a model with the common engine.

Run under ``torchrun --nproc_per_node=N -m realdeal train ...`` for multi-GPU (or
multi-process CPU) training. Config resolution: ``--preset`` → ``--config`` (or, with
``--resume``, the run's own ``config.json``) → individual flags.

Other model kinds add their own sub-command: a module listed in :data:`TRAINER_MODULES`
exposes ``register_train(train_subparsers)`` and may reuse :func:`add_engine_flags`,
:func:`engine_overrides` and :func:`resolve_config`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

#: Modules that add further ``realdeal train <kind>`` sub-commands (the refiner adds its own).
TRAINER_MODULES: list[str] = ["realdeal.commands.train_refiner"]


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """Flags of :class:`~realdeal.training.engine.TrainConfig` and of the run itself."""
    p.add_argument(
        "--data", required=True, help="prepared dataset folder (trains on its train split)"
    )
    p.add_argument(
        "-o", "--out", required=True, help="run folder: checkpoint.pt, config.json, metrics.jsonl"
    )
    p.add_argument(
        "--preset", help="paper (SPEC sizes) or cpu-small (minutes on 2 CPU cores); default paper"
    )
    p.add_argument(
        "--config",
        help="YAML/JSON run config (e.g. a config.json written by an earlier run); flags override it",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    g = p.add_argument_group("optimisation (override the preset)")
    g.add_argument("--steps", type=int, help="total optimizer steps")
    g.add_argument(
        "--batch-size", type=int, help="global batch (samples per optimizer step, all processes)"
    )
    g.add_argument(
        "--grad-accum", type=int, help="gradient accumulation micro-steps per optimizer step"
    )
    g.add_argument("--lr", type=float, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up steps")
    g.add_argument(
        "--lr-decay",
        choices=["constant", "cosine"],
        help="after warm-up: constant, or a half cosine to 0 at --steps",
    )
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (0 = off)")
    g.add_argument("--ema-decay", type=float, help="EMA decay of the weights used for inference")
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="mixed precision (auto: bf16 where supported)",
    )
    g.add_argument("--log-every", type=int, help="write metrics every N steps")
    g.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps (and at the end)")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument(
        "--workers", type=int, dest="num_workers", help="data-loading worker processes per rank"
    )
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (auto: this rank's GPU if any)")
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last 3D memory layout (faster convolutions on CPU)",
    )


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train": {...}}`` overrides from :func:`add_engine_flags` (unset flags are None)."""
    return {
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "grad_accum": args.grad_accum,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup_steps": args.warmup_steps,
            "lr_decay": args.lr_decay,
            "ema_decay": args.ema_decay,
            "precision": args.precision,
            "log_every": args.log_every,
            "checkpoint_every": args.checkpoint_every,
            "seed": args.seed,
            "num_workers": args.num_workers,
            "device": args.device,
            "channels_last": args.channels_last,
        }
    }


def resolve_config(kind: str, cls: type, args: argparse.Namespace, overrides: dict[str, Any]):
    """Preset → ``--config`` / the resumed run's ``config.json`` → flag overrides."""
    from realdeal.presets import preset, with_overrides

    saved = Path(args.out) / "config.json"
    if args.config:
        cfg = _load(cls, args.config)
    elif args.resume and saved.exists():
        cfg = _load(cls, saved)
    else:
        cfg = preset(kind, args.preset or "paper")
    if args.preset and (args.config or args.resume) and cfg.preset != args.preset:
        from realdeal.errors import ConfigError

        raise ConfigError(
            f"--preset {args.preset} conflicts with the loaded config (preset {cfg.preset})"
        )
    cfg = with_overrides(cfg, overrides)
    if getattr(args, "grad_clip", None) is not None:
        import dataclasses

        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, grad_clip=args.grad_clip or None)
        )
    return cfg


def _load(cls: type, path: str | Path):
    """Read a run config (YAML or JSON, as :func:`realdeal.config.load_config`)."""
    from realdeal.config import load_config

    return load_config(cls, path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the autoencoder, the latent diffusion model or the refiner",
        description="Train one model with the common engine (AdamW, mixed precision, EMA, "
        "checkpoints, --resume; multi-GPU under torchrun): the autoencoder (stage 1), the "
        "latent diffusion model (stage 2) or the RealDeal refiner.",
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    a = kinds.add_parser("autoencoder", help="stage 1: the 3D ResNet autoencoder (SPEC §3)")
    add_engine_flags(a)
    m = a.add_argument_group("autoencoder")
    m.add_argument(
        "--channels",
        type=int,
        nargs=3,
        metavar=("C0", "C1", "C2"),
        help="widths at full, 1/2, 1/4 resolution",
    )
    m.add_argument("--bottleneck", type=int, help="width of the 1×1×1 layer before the latent")
    m.add_argument(
        "--norm", choices=["batch", "group", "none"], help="normalisation layers (paper: batch)"
    )
    m.add_argument("--loss", choices=["mse", "l1"], help="reconstruction loss (paper code: mse)")
    m.add_argument(
        "--crop",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="train on random crops (multiples of 4)",
    )
    m.add_argument("--whole-volumes", action="store_true", help="train on whole volumes (no crops)")
    a.set_defaults(func=run_autoencoder)

    ldm = kinds.add_parser("ldm", help="stage 2: latent diffusion U-Net (SPEC §4)")
    add_engine_flags(ldm)
    ldm.add_argument(
        "--autoencoder",
        required=True,
        help="autoencoder checkpoint.pt (its EMA weights encode the data)",
    )
    u = ldm.add_argument_group("U-Net and schedule")
    u.add_argument("--channels", type=int, nargs="+", help="channels per level")
    u.add_argument("--num-res-blocks", type=int, help="residual blocks per level")
    u.add_argument(
        "--attention", type=int, nargs="+", choices=[0, 1], help="self-attention per level (0/1)"
    )
    u.add_argument(
        "--head-channels", type=int, nargs="+", help="attention head channels per level (0 = none)"
    )
    u.add_argument("--norm-groups", type=int, help="GroupNorm groups")
    u.add_argument(
        "--schedule",
        choices=["linear_beta", "scaled_linear_beta"],
        help="β schedule (paper: linear)",
    )
    u.add_argument("--beta-start", type=float, help="first β (0.0015)")
    u.add_argument("--beta-end", type=float, help="last β (0.0205)")
    u.add_argument(
        "--prediction-type",
        choices=["v_prediction", "epsilon"],
        help="what the U-Net predicts (paper: v)",
    )
    ldm.set_defaults(func=run_ldm)

    for name in TRAINER_MODULES:
        importlib.import_module(name).register_train(kinds)


def run_autoencoder(args: argparse.Namespace) -> int:
    from realdeal.presets import AutoencoderRunConfig
    from realdeal.training.autoencoder import train_autoencoder
    from realdeal.training.distributed import cleanup

    over = engine_overrides(args)
    over["model"] = {"channels": args.channels, "bottleneck": args.bottleneck, "norm": args.norm}
    over["loss"] = args.loss
    over["crop"] = args.crop
    cfg = resolve_config("autoencoder", AutoencoderRunConfig, args, over)
    if args.whole_volumes:
        import dataclasses

        cfg = dataclasses.replace(cfg, crop=None)
    try:
        res = train_autoencoder(cfg, args.data, args.out, resume=args.resume)
    finally:
        cleanup()
    _report(res)
    return 0


def run_ldm(args: argparse.Namespace) -> int:
    from realdeal.presets import LDMRunConfig
    from realdeal.training.distributed import cleanup
    from realdeal.training.ldm import train_ldm

    over = engine_overrides(args)
    over["unet"] = {
        "channels": args.channels,
        "num_res_blocks": args.num_res_blocks,
        "attention_levels": [bool(a) for a in args.attention] if args.attention else None,
        "num_head_channels": args.head_channels,
        "norm_num_groups": args.norm_groups,
    }
    over["schedule"] = {
        "schedule": args.schedule,
        "beta_start": args.beta_start,
        "beta_end": args.beta_end,
        "prediction_type": args.prediction_type,
    }
    cfg = resolve_config("ldm", LDMRunConfig, args, over)
    try:
        res = train_ldm(cfg, args.data, args.autoencoder, args.out, resume=args.resume)
    finally:
        cleanup()
    _report(res)
    return 0


def _report(res) -> None:
    import logging

    logging.getLogger("realdeal.train").info(
        "step %d, loss %.5g; checkpoint %s", res.step, res.loss, res.checkpoint
    )
