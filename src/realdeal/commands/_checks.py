"""Checks every command runs before any work: outputs writable, device present, input files
well formed. Each refusal is one :class:`~realdeal.errors.InputError` or
:class:`~realdeal.errors.ConfigError` line naming the option and the path or value, and
nothing is created or changed on disk by any check.

A sub-command declares its checks with ``parser.set_defaults(preflight=fn)``; ``fn(args)``
calls the helpers here. :func:`preflight` (run by :func:`realdeal.cli.main` between parsing
and the command) runs them, after checking ``--device``. The typed readers at the end parse
side files into records with one-line errors naming the file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realdeal.config import JsonFields, read_json
from realdeal.errors import ConfigError, InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def preflight(args: argparse.Namespace) -> None:
    """Everything a command checks before it starts: its device, then its own checks."""
    for dest in ("device", "train.device"):
        value = getattr(args, dest, None)
        if value is not None:
            check_device(value, "--device")
    check: Callable[[argparse.Namespace], None] | None = getattr(args, "preflight", None)
    if check is not None:
        check(args)


# --------------------------------------------------------------------------- devices


def check_device(name: str, flag: str = "--device") -> None:
    """:func:`realdeal.runtime.device.check_device`, importing torch only for a ``cuda`` name
    (a misspelt name is refused without it)."""
    from realdeal.config import device_problem

    problem = device_problem(name)
    if problem:
        raise ConfigError(f"{flag}: {problem}")
    if name.startswith("cuda"):
        from realdeal.runtime.device import check_device as check

        check(name, flag)


# --------------------------------------------------------------------------- outputs


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the one a new path would be made in)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, flag: str, what: str) -> None:
    """``path`` (absent) can be made: its nearest existing ancestor is a writable folder."""
    if path.is_symlink():
        raise InputError(path, f"{flag}: is a broken symbolic link")
    anc = _first_existing(path.parent)
    if not anc.is_dir():
        raise InputError(path, f"{flag}: cannot create this {what}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(path, f"{flag}: cannot create this {what}: {anc} is not writable")


def check_writable_dir(path: str | os.PathLike, flag: str) -> None:
    """Refuse an output folder that cannot be written: a file, a path under a file, a folder
    (or nearest existing parent) without write permission. Creates nothing."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise InputError(p, f"{flag}: is a file, expected a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(p, f"{flag}: folder is not writable")
        return
    _check_creatable(p, flag, "folder")


def check_writable_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse an output file that cannot be written: an existing folder, a path under a file,
    a parent folder without write permission (files are written beside and renamed into
    place). Creates nothing."""
    p = Path(path)
    if p.is_dir():
        raise InputError(p, f"{flag}: is a folder, expected a file name")
    if p.exists():
        parent = p.resolve().parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(p, f"{flag}: cannot replace this file: {parent} is not writable")
        return
    _check_creatable(p, flag, "file")


def check_output(path: str | os.PathLike, flag: str) -> None:
    """An output that is a NIfTI file when its name says so (one input), else a folder."""
    if str(path).endswith(NIFTI_SUFFIXES):
        check_writable_file(path, flag)
    else:
        check_writable_dir(path, flag)


# --------------------------------------------------------------------------- inputs


def check_dataset(path: str | os.PathLike, flag: str) -> None:
    """Refuse a ``--data`` that is not a readable prepared dataset (its ``dataset.json``
    parsed by :class:`~realdeal.data.dataset.PreparedDataset`), before any work."""
    from realdeal.data.dataset import PreparedDataset

    try:
        PreparedDataset(path)
    except InputError as e:
        raise InputError(e.path, f"{flag}: {e.problem}") from e
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as e:
        raise InputError(Path(path) / "dataset.json", f"{flag}: malformed ({_what(e)})") from e


def check_intensity_source(path: str | os.PathLike | None, flag: str) -> None:
    """``--intensity-from``: a prepared dataset folder must be readable; a checkpoint file is
    read by the command itself."""
    if path is not None and Path(path).is_dir():
        check_dataset(path, flag)


def _what(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"missing entry {e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# --------------------------------------------------------------------------- checkpoints


def checkpoint_arg(value: str) -> str:
    """``argparse`` type of every option that takes a realdeal checkpoint: ``demo:autoencoder``,
    ``demo:ldm``, ``demo:refiner`` and ``demo:refiner-student`` name the models shipped inside
    the package (:func:`realdeal.runtime.checkpoint.resolve_checkpoint`) and become their
    paths; anything else is a path, kept as given. An unknown ``demo:`` name is a usage error."""
    if not value.startswith("demo:"):  # runtime.checkpoint.DEMO_PREFIX (it imports torch)
        return value
    from realdeal.runtime.checkpoint import resolve_checkpoint

    try:
        return str(resolve_checkpoint(value))
    except InputError as e:
        raise argparse.ArgumentTypeError(f"{value}: {e.problem}") from e


# --------------------------------------------------------------------------- demo checkpoints

DEMO_FORMAT = "realdeal-demo-checkpoints"
MODEL_KINDS = ("autoencoder", "ldm", "refiner")


def parse_demo_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` of a demo-checkpoint folder (``realdeal demo --checkpoints DIR``),
    checked for what ``realdeal demo`` reads: cohort and prepare configs, steps per model, the
    sha256 table and (version 2) the per-model records. Returns the parsed manifest."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InputError(folder, "holds no manifest.json (not a demo checkpoint folder)")
    m = JsonFields(path, read_json(path, "demo checkpoint manifest"))
    fmt = m.get("format", str, optional=True)
    if fmt is not None and fmt != DEMO_FORMAT:
        raise InputError(path, f"not a demo checkpoint manifest (format={fmt!r})")
    version = m.get("version", int, optional=True) or 1
    m.get("cohort", dict, optional=True)
    m.get("prepare", dict, optional=True)
    steps = m.obj("steps")
    for kind in MODEL_KINDS:
        if steps.get(kind, int) < 0:  # type: ignore[union-attr]
            raise InputError(path, f"steps.{kind} must not be negative")
    sha = m.obj("sha256", optional=True)
    if sha is not None:
        for kind in MODEL_KINDS:
            sha.get(kind, str, optional=True)
    if version >= 2:
        models = m.obj("models")
        for kind in MODEL_KINDS:
            rec = models.obj(kind)  # type: ignore[union-attr]
            rec.get("steps", int)  # type: ignore[union-attr]
            rec.get("sha256", str, optional=True)  # type: ignore[union-attr]
    else:
        m.get("train_seconds", dict, optional=True)
    return m.data


def check_demo_checkpoints(value: str | None, flag: str = "--checkpoints") -> None:
    """``demo --checkpoints DIR``: DIR must be a folder with a well-formed manifest
    (``packaged`` and ``none`` need nothing)."""
    if value in (None, "none", "packaged"):
        return
    folder = Path(value)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise InputError(folder, f"{flag}: no such demo checkpoint folder")
    try:
        parse_demo_manifest(folder)
    except InputError as e:
        raise InputError(e.path, f"{flag}: {e.problem}") from e


def parse_cohort_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config`` of a cohort folder's ``cohort.json`` (written by ``realdeal cohort``)."""
    path = Path(folder) / "cohort.json"
    record = JsonFields(path, read_json(path, "cohort record"))
    return record.get("config", dict)
