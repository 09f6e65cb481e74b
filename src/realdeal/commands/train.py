"""``realdeal train {autoencoder,ldm,refiner}``: train a model with the common engine.

Run under ``torchrun --nproc_per_node=N -m realdeal train ...`` for multi-GPU (or
multi-process CPU) training. Config resolution: ``--preset`` → ``--config`` (or, with
``--resume``, the run's own ``config.json``) → individual flags.

Other model kinds add their own sub-command: a module listed in :data:`TRAINER_MODULES`
exposes ``register_train(train_subparsers)`` and may reuse :func:`add_engine_flags`,
:func:`~realdeal.commands._flags.config_overrides`, :func:`resolve_config` and
:func:`train_and_report`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realdeal.commands._flags import (
    ConfigFlags,
    DeferredFlagsParser,
    Flag,
    add_config_flags,
    argument_group,
    config_overrides,
)

#: Modules that add further ``realdeal train <kind>`` sub-commands (the refiner adds its own).
TRAINER_MODULES: list[str] = ["realdeal.commands.train_refiner"]


ENGINE_FLAGS = ConfigFlags(
    "realdeal.presets:TrainConfig",
    ("train",),
    {
        "steps": "total optimizer steps",
        "batch_size": "global batch (samples per optimizer step, all processes)",
        "grad_accum": "gradient accumulation micro-steps per optimizer step",
        "lr": "AdamW learning rate",
        "weight_decay": "AdamW weight decay",
        "betas": Flag("AdamW betas", metavar=("B1", "B2")),
        "warmup_steps": "linear learning-rate warm-up steps",
        "lr_decay": "after warm-up: constant, or a half cosine to --min-lr-ratio·lr at --steps",
        "min_lr_ratio": "where --lr-decay cosine ends, as a fraction of --lr (default 0)",
        "grad_clip": Flag("clip the gradient norm to this (0 = off)", zero_clears=True),
        "ema_decay": "EMA decay of the weights used for inference",
        "precision": "mixed precision (auto: bf16 where supported)",
        "log_every": "write metrics every N steps",
        "checkpoint_every": "checkpoint every N steps (and at the end)",
        "seed": "random seed",
        "num_workers": Flag("data-loading worker processes per rank", name="--workers"),
        "device": "auto, cpu, cuda or cuda:N (auto: this rank's GPU if any)",
        "channels_last": "channels-last 3D memory layout (faster convolutions on CPU)",
        "init_from": Flag(
            "start from the (EMA) weights of this checkpoint of the same kind and network, "
            "with a new optimizer and schedule (fine-tuning; ignored on --resume)",
            metavar="CHECKPOINT",
        ),
    },
    "optimisation (override the preset)",
)
"""Flags of :class:`~realdeal.presets.TrainConfig`, shared by every ``train`` sub-command."""


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """The run's own flags (data, folder, preset, config, resume) and :data:`ENGINE_FLAGS`."""
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
    add_config_flags(p, ENGINE_FLAGS)


def resolve_config(kind: str, cls: type, args: argparse.Namespace, overrides: dict[str, Any]):
    """Preset → ``--config`` / the resumed run's ``config.json`` → flag overrides.

    ``overrides``: usually :func:`~realdeal.commands._flags.config_overrides` of ``args``.
    """
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
    return with_overrides(cfg, overrides)


def _load(cls: type, path: str | Path):
    """Read a run config (YAML or JSON, as :func:`realdeal.config.load_config`)."""
    from realdeal.config import load_config

    return load_config(cls, path)


AUTOENCODER_FLAGS = (
    ConfigFlags(
        "realdeal.models.autoencoder:AutoencoderConfig",
        ("model",),
        {
            "channels": Flag("widths at full, 1/2, 1/4 resolution", metavar=("C0", "C1", "C2")),
            "bottleneck": "width of the 1×1×1 layer before the latent",
            "norm": "normalisation layers (paper: batch)",
        },
        "autoencoder",
    ),
    ConfigFlags(
        "realdeal.presets:AutoencoderRunConfig",
        (),
        {
            "loss": "reconstruction loss (paper code: mse)",
            "crop": Flag("train on random crops (multiples of 4)", metavar=("X", "Y", "Z")),
        },
        "autoencoder",
    ),
)
LDM_FLAGS = (
    ConfigFlags(
        "realdeal.models.unet:UNetConfig",
        ("unet",),
        {
            "channels": "channels per level",
            "num_res_blocks": "residual blocks per level",
            "attention_levels": Flag("self-attention per level (0/1)", name="--attention"),
            "num_head_channels": Flag(
                "attention head channels per level (0 = none)", name="--head-channels"
            ),
            "norm_num_groups": Flag("GroupNorm groups", name="--norm-groups"),
        },
        "U-Net and schedule",
    ),
    ConfigFlags(
        "realdeal.diffusion.schedule:ScheduleConfig",
        ("schedule",),
        {
            "schedule": "β schedule (paper: linear)",
            "beta_start": "first β (0.0015)",
            "beta_end": "last β (0.0205)",
            "prediction_type": "what the U-Net predicts (paper: v)",
        },
        "U-Net and schedule",
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the autoencoder, the latent diffusion model or the refiner",
        description="Train one model with the common engine (AdamW, mixed precision, EMA, "
        "checkpoints, --resume; multi-GPU under torchrun): the autoencoder (stage 1), the "
        "latent diffusion model (stage 2) or the RealDeal refiner.",
    )
    kinds = p.add_subparsers(
        dest="kind", required=True, metavar="KIND", parser_class=DeferredFlagsParser
    )

    a = kinds.add_parser("autoencoder", help="stage 1: the 3D ResNet autoencoder (SPEC §3)")
    add_engine_flags(a)
    add_config_flags(a, *AUTOENCODER_FLAGS)
    a.defer(  # after the generated flags, in their group
        lambda a: argument_group(a, "autoencoder").add_argument(
            "--whole-volumes", action="store_true", help="train on whole volumes (no crops)"
        )
    )
    a.set_defaults(func=run_autoencoder)

    ldm = kinds.add_parser("ldm", help="stage 2: latent diffusion U-Net (SPEC §4)")
    add_engine_flags(ldm)
    ldm.add_argument(
        "--autoencoder",
        required=True,
        help="autoencoder checkpoint.pt (its EMA weights encode the data)",
    )
    add_config_flags(ldm, *LDM_FLAGS)
    ldm.set_defaults(func=run_ldm)

    for name in TRAINER_MODULES:
        importlib.import_module(name).register_train(kinds)


def run_autoencoder(args: argparse.Namespace) -> int:
    from realdeal.presets import CLEAR, AutoencoderRunConfig
    from realdeal.training.autoencoder import train_autoencoder

    over = config_overrides(args)
    if args.whole_volumes:
        over["crop"] = CLEAR
    cfg = resolve_config("autoencoder", AutoencoderRunConfig, args, over)
    return train_and_report(train_autoencoder, cfg, args.data, args.out, resume=args.resume)


def run_ldm(args: argparse.Namespace) -> int:
    from realdeal.presets import LDMRunConfig
    from realdeal.training.ldm import train_ldm

    cfg = resolve_config("ldm", LDMRunConfig, args, config_overrides(args))
    return train_and_report(
        train_ldm, cfg, args.data, args.autoencoder, args.out, resume=args.resume
    )


def train_and_report(train_fn: Callable[..., Any], *args: Any, resume: bool) -> int:
    """Run ``train_fn(*args, resume=resume)``, release the process group, log the result."""
    import logging

    from realdeal.training.distributed import cleanup

    try:
        res = train_fn(*args, resume=resume)
    finally:
        cleanup()
    logging.getLogger("realdeal.train").info(
        "step %d, loss %.5g; checkpoint %s", res.step, res.loss, res.checkpoint
    )
    if res.stopped_by:  # stopped early on a signal: the checkpoint resumes it; exit as killed
        import signal

        return 128 + int(getattr(signal, res.stopped_by))
    return 0
