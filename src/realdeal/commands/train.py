"""``realdeal train {autoencoder,ldm,refiner}``: train a model with the common engine.

Run under ``torchrun --nproc_per_node=N -m realdeal train ...`` for multi-GPU (or
multi-process CPU) training. Config resolution: ``--preset`` → ``--config`` (or, with
``--resume``, the run's own configuration: the one its checkpoint was trained with, with the
run's ``config.json`` for what may change on resume) → individual flags.

A run is decided before anything is written (:mod:`realdeal.training.run_folder`): ``--out``
must be a new or empty folder or a realdeal run folder of the same kind; a checkpoint there
needs ``--resume``; and ``--resume`` may change only how long the run goes on, how often it
logs and saves, and where and how it computes — ``--steps``, ``--log-every``,
``--checkpoint-every``, ``--snapshot-every``, ``--workers``, ``--device``, ``--precision``,
``--channels-last``, ``--grad-accum`` (``--init-from`` is ignored) — with the dataset (and an
LDM's autoencoder) the run trained on; any other flag that differs from the run's is refused
in one line and nothing is written. One process trains into a folder at a time.

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

from realdeal.commands._checks import (
    check_dataset,
    check_device,
    check_writable_dir,
    checkpoint_arg,
)
from realdeal.commands._flags import (
    ConfigFlags,
    DeferredFlagsParser,
    Flag,
    add_config_flags,
    argument_group,
    config_overrides,
)
from realdeal.config import device_arg

#: Modules that add further ``realdeal train <kind>`` sub-commands (the refiner adds its own).
TRAINER_MODULES: list[str] = ["realdeal.commands.train_refiner", "realdeal.commands.train_student"]


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
        "min_lr_ratio": "where --lr-decay cosine ends, as a fraction of --lr",
        "grad_clip": Flag("clip the gradient norm to this (0 = off)", zero_clears=True),
        "ema_decay": "EMA decay of the weights used for inference",
        "precision": "mixed precision (auto: bf16 where supported)",
        "log_every": "write metrics every N steps",
        "checkpoint_every": "checkpoint every N steps (and at the end)",
        "snapshot_every": "also keep the EMA weights of every N-th step as snapshots/step-N.pt "
        "(0 = none)",
        "seed": "random seed",
        "num_workers": Flag("data-loading worker processes per rank", name="--workers"),
        "device": Flag("auto, cpu, cuda or cuda:N (auto: this rank's GPU if any)", type=device_arg),
        "channels_last": "channels-last 3D memory layout (faster convolutions on CPU)",
        "init_from": Flag(
            "start from the (EMA) weights of this checkpoint of the same kind and network "
            "(demo:KIND: the shipped one), with a new optimizer and schedule (fine-tuning; "
            "ignored on --resume)",
            metavar="CHECKPOINT",
            type=checkpoint_arg,
        ),
    },
    "optimisation (override the preset)",
)
"""Flags of :class:`~realdeal.presets.TrainConfig`, shared by every ``train`` sub-command."""


def add_engine_flags(p: argparse.ArgumentParser, kind: str | None = None) -> None:
    """The run's own flags (data, folder, preset, config, resume) and :data:`ENGINE_FLAGS`.

    ``kind`` (default: the sub-command's name, e.g. ``ldm``) is the model kind whose presets'
    values the generated flags' help states as their defaults."""
    p.set_defaults(preset_kind=kind or p.prog.split()[-1])
    p.add_argument(
        "--data", required=True, help="prepared dataset folder (trains on its train split)"
    )
    p.add_argument(
        "-o", "--out", required=True, help="run folder: checkpoint.pt, config.json, metrics.jsonl"
    )
    p.add_argument(
        "--preset",
        help="paper (the paper's sizes) or cpu-small (minutes on 2 CPU cores); default paper",
    )
    p.add_argument(
        "--config",
        help="YAML/JSON run config (e.g. a config.json written by an earlier run); flags override it",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its configuration; "
        "only --steps, --log-every, --checkpoint-every, --snapshot-every, --workers, --device, "
        "--precision, --channels-last and --grad-accum may change",
    )
    add_config_flags(p, ENGINE_FLAGS)
    p.set_defaults(preflight=check_run)


def check_run(args: argparse.Namespace) -> None:
    """Before training: the run folder can be written, ``--data`` is a prepared dataset and
    ``--latents`` (``train ldm``) a folder."""
    check_writable_dir(args.out, "-o/--out")
    check_dataset(args.data, "--data")
    latents = getattr(args, "latents", None)
    if latents is not None and not Path(latents).is_dir():
        from realdeal.errors import InputError

        raise InputError(latents, "--latents: no such folder")


def resolve_config(kind: str, cls: type, args: argparse.Namespace, overrides: dict[str, Any]):
    """Preset → ``--config`` / the resumed run's configuration → flag overrides.

    The resumed run's configuration is the one its checkpoint was trained with, taking from its
    ``config.json`` only what may change on resume (a later ``--steps``, say); without a
    checkpoint yet, its ``config.json``. ``overrides``: usually
    :func:`~realdeal.commands._flags.config_overrides` of ``args``.
    """
    from realdeal.presets import preset, with_overrides
    from realdeal.training.run_folder import CHECKPOINT_NAME, CONFIG_NAME

    saved = Path(args.out) / CONFIG_NAME
    ckpt = Path(args.out) / CHECKPOINT_NAME
    if args.config:
        cfg = _load(cls, args.config)
    elif args.resume and ckpt.is_file():
        cfg = _resumed_config(kind, cls, ckpt, saved)
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
    check_device(cfg.train.device, "--device (or the config's train.device)")
    return cfg


def _load(cls: type, path: str | Path):
    """Read a run config (YAML or JSON, as :func:`realdeal.config.load_config`)."""
    from realdeal.config import load_config

    return load_config(cls, path)


def _resumed_config(kind: str, cls: type, ckpt: Path, saved: Path):
    """The config a checkpoint was trained with, with the resumable ``train`` fields of the
    run's ``config.json`` (a ``--steps`` given to an earlier resume that stopped before its
    first checkpoint). A ``config.json`` that disagrees in anything else (written by a refused
    run of an earlier realdeal) is ignored with a warning."""
    import logging

    from realdeal.config import from_dict, to_dict
    from realdeal.errors import ConfigError, InputError, RealDealError
    from realdeal.training.run_folder import (
        RESUMABLE_FIELDS,
        read_run_checkpoint,
        resume_conflicts,
    )

    stored, _, _ = read_run_checkpoint(ckpt, kind)
    try:
        cfg = from_dict(cls, stored)
    except ConfigError as e:
        raise InputError(ckpt, f"holds a run config this realdeal cannot read ({e})") from e
    if not saved.exists():
        return cfg
    try:
        own = to_dict(_load(cls, saved))
    except RealDealError as e:
        logging.getLogger("realdeal.train").warning("ignoring %s (%s)", saved, e)
        return cfg
    if conflicts := resume_conflicts(stored, own):
        logging.getLogger("realdeal.train").warning(
            "%s differs from the checkpoint's config in %s; resuming with the checkpoint's",
            saved, ", ".join(k for k, _, _ in conflicts),
        )  # fmt: skip
    merged = to_dict(cfg)
    merged["train"] |= {k: v for k, v in own["train"].items() if k in RESUMABLE_FIELDS}
    return from_dict(cls, merged)


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
            "beta_start": "first β",
            "beta_end": "last β",
            "prediction_type": "what the U-Net predicts (paper: v)",
            "snr_scale": "multiply every timestep's signal-to-noise ratio (paper: 1)",
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

    a = kinds.add_parser(
        "autoencoder",
        help="stage 1: the 3D ResNet autoencoder",
        description="Train the 3D ResNet autoencoder (paper stage 1) on the train split of a "
        "prepared dataset: it compresses each volume 4× per axis into a 4-channel latent and "
        "decodes it back. Its EMA weights encode the data for the LDM and make the "
        "reconstructions the refiner trains on.",
    )
    add_engine_flags(a)
    add_config_flags(a, *AUTOENCODER_FLAGS)
    a.defer(  # after the generated flags, in their group
        lambda a: argument_group(a, "autoencoder").add_argument(
            "--whole-volumes", action="store_true", help="train on whole volumes (no crops)"
        )
    )
    a.set_defaults(func=run_autoencoder)

    ldm = kinds.add_parser(
        "ldm",
        help="stage 2: latent diffusion U-Net",
        description="Train the latent diffusion U-Net (paper stage 2) on the latents of the "
        "train split, encoded by --autoencoder's EMA weights (cached in the run folder). The "
        "checkpoint carries that autoencoder, so `realdeal sample` needs only it.",
    )
    add_engine_flags(ldm)
    ldm.add_argument(
        "--autoencoder",
        required=True,
        type=checkpoint_arg,
        help="autoencoder checkpoint, .pt or .safetensors (its EMA weights encode the data), or "
        "demo:autoencoder for the shipped one",
    )
    ldm.add_argument(
        "--latents",
        metavar="DIR",
        help="train on the latents in DIR (<id>.safetensors made by --autoencoder, as realdeal "
        "encode writes them) instead of encoding --data's images, which then need not be there: "
        "--data names the split and the grid (default: encode, cached in the run folder)",
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
    import functools

    train_fn = functools.partial(train_ldm, latents=args.latents)
    return train_and_report(
        train_fn, cfg, args.data, args.autoencoder, args.out, resume=args.resume
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
