"""``realdeal train refiner-student``: distil a refiner for few-step refinement.

Progressive distillation (:mod:`realdeal.training.distill`) of any refiner checkpoint, on the
common engine: ``--rounds`` rounds of halving from ``--start-steps`` teacher steps,
``--steps-per-round`` optimizer steps each; resumable like every run (``--resume`` continues
inside the round it stopped in). The run's checkpoints are refiner checkpoints that
``realdeal refine --checkpoint`` and ``RefinerPipeline.from_checkpoint`` load like any refiner;
``RUN/rounds/round-K.pt`` keeps the student of every round.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realdeal.commands._checks import checkpoint_arg
from realdeal.commands._flags import ConfigFlags, add_config_flags, config_overrides
from realdeal.commands.train import add_engine_flags, check_run, resolve_config, train_and_report

KIND = "refiner-student"

STUDENT_FLAGS = ConfigFlags(
    "realdeal.presets:DistillConfig",
    ("distill",),
    {
        "start_steps": "steps the teacher runs in the first round (deterministic DDIM on the "
        "halving grid); must halve --rounds times",
        "rounds": "rounds of halving: the student runs start-steps / 2^rounds steps",
        "steps_per_round": "optimizer steps of each round (--steps is rounds × this)",
        "spacing": "spacing of the halving time grid (quadratic: denser toward t = 0)",
        "weighting": "loss weight on the clean estimate's squared error: snr+1 (= the v-MSE) "
        "or truncated-snr (max(SNR, 1))",
    },
    "distillation",
)
"""The flags of :class:`~realdeal.presets.DistillConfig`."""


def register_train(kinds: argparse._SubParsersAction) -> None:
    """Add ``realdeal train refiner-student`` to the ``train`` sub-commands."""
    p = kinds.add_parser(
        KIND,
        help="distil a refiner into a few-step student (progressive distillation)",
        description="Distil any refiner checkpoint (--teacher) into a student that refines in "
        "a few steps: progressive distillation (Salimans & Ho 2022) on the refiner's masked "
        "windows, each round halving the steps (16 → 8 → 4 → 2 → 1 with the cpu-small "
        "preset). Trains on the train split of a prepared dataset with reconstructions, as "
        "refiner training does. The checkpoints are refiner checkpoints that sample with "
        "their own few-step sampler by default; RUN/rounds/round-K.pt keeps each round's "
        "student.",
    )
    add_engine_flags(p, KIND)
    p.add_argument(
        "--teacher",
        required=True,
        type=checkpoint_arg,
        help="the refiner checkpoint to distil (.pt or .safetensors; demo:refiner for the "
        "shipped one); with --resume, the file the run started from",
    )
    add_config_flags(p, STUDENT_FLAGS)
    p.set_defaults(func=run_student, preflight=check_student)


def check_student(args: argparse.Namespace) -> None:
    """Before any work: what every run checks, the teacher is a readable refiner checkpoint,
    and no flag a student run sets itself is given."""
    from realdeal.errors import ConfigError, InputError
    from realdeal.runtime.checkpoint import load_checkpoint

    for dest, flag, why in (
        ("train.steps", "--steps", "a student trains --rounds × --steps-per-round steps"),
        ("train.init_from", "--init-from", "a student starts from --teacher's weights"),
    ):
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"{flag} is not for {KIND} runs: {why}")
    check_run(args)
    try:
        load_checkpoint(args.teacher, kind="refiner")
    except InputError as e:
        raise InputError(e.path, f"--teacher: {e.problem}") from e


def resolve_student_config(args: argparse.Namespace):
    """Preset → ``--config`` / the resumed run's configuration → flags, as every run resolves
    its config (:func:`~realdeal.commands.train.resolve_config`); a resumed run's
    configuration is the one its checkpoint (a refiner checkpoint) was trained with."""
    from realdeal.commands._checks import check_device
    from realdeal.errors import ConfigError
    from realdeal.presets import StudentRunConfig, with_overrides
    from realdeal.training.run_folder import CHECKPOINT_NAME

    ckpt = Path(args.out) / CHECKPOINT_NAME
    if not (args.resume and ckpt.is_file() and not args.config):
        return resolve_config(KIND, StudentRunConfig, args, config_overrides(args))
    cfg = _stored_config(ckpt)
    if args.preset and cfg.preset != args.preset:
        raise ConfigError(f"--preset {args.preset} conflicts with the run's (preset {cfg.preset})")
    cfg = with_overrides(cfg, config_overrides(args))
    check_device(cfg.train.device, "--device (or the config's train.device)")
    return cfg


def _stored_config(ckpt: Path):
    """The run config a student run's checkpoint was trained with."""
    from realdeal.config import from_dict
    from realdeal.errors import ConfigError, InputError
    from realdeal.presets import StudentRunConfig
    from realdeal.training.run_folder import read_run_checkpoint

    stored, _, _ = read_run_checkpoint(ckpt, "refiner")
    if "distill" not in stored:
        raise InputError(ckpt.parent, f"is a refiner run, not a {KIND} run")
    try:
        return from_dict(StudentRunConfig, stored)
    except ConfigError as e:
        raise InputError(ckpt, f"holds a run config this realdeal cannot read ({e})") from e


def run_student(args: argparse.Namespace) -> int:
    from realdeal.training.distill import train_student

    cfg = resolve_student_config(args)
    return train_and_report(
        train_student, cfg, args.teacher, args.data, args.out, resume=args.resume
    )
