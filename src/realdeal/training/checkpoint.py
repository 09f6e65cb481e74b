"""Checkpoints: one ``torch.save`` file, written atomically, read with ``weights_only=True``.

A checkpoint is a dict of plain types and tensors only (so it never unpickles code):

``format``  ``"realdeal-checkpoint/1"``
``kind``    ``"autoencoder"``, ``"ldm"`` or ``"refiner"``
``preset``  preset name the run started from
``config``  the resolved run config as a JSON string
``model_config``  the network's config as a JSON string (compared on resume)
``step``, ``model``, ``ema``, ``optimizer``, ``scaler``, ``rng`` and ``extra`` (kind-specific
tensors/values, e.g. the LDM's latent scaling).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from realdeal.errors import InputError
from realdeal.utils.fs import atomic_path

FORMAT = "realdeal-checkpoint/1"
KINDS = ("autoencoder", "ldm", "refiner")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (must hold ``kind``) to ``path`` atomically: temp file + rename."""
    if payload.get("kind") not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {payload.get('kind')!r}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint safely; raise :class:`InputError` (one line) if it is unusable.

    ``kind`` is the model kind the caller needs; a checkpoint of another kind is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(
            path, f"not a readable checkpoint (truncated or corrupt: {str(e).splitlines()[0]})"
        ) from e
    except pickle.UnpicklingError as e:
        raise InputError(
            path, "not a realdeal checkpoint (holds objects other than tensors and plain values)"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, "not a realdeal checkpoint (no realdeal format marker)")
    if kind is not None and ckpt.get("kind") != kind:
        raise InputError(
            path, f"is a checkpoint of kind {ckpt.get('kind')!r}, but kind {kind!r} is needed here"
        )
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], key: str = "config") -> dict[str, Any]:
    """The JSON config stored under ``key`` as a dict."""
    return json.loads(ckpt[key])


def check_model_config(
    path: str | os.PathLike, ckpt: dict[str, Any], model_config: dict[str, Any]
) -> None:
    """Refuse a checkpoint whose network config differs from ``model_config`` (other preset)."""
    theirs = checkpoint_config(ckpt, "model_config")
    if theirs != model_config:
        diff = sorted(
            k for k in set(theirs) | set(model_config) if theirs.get(k) != model_config.get(k)
        )
        raise InputError(
            path,
            f"was trained with a different {ckpt.get('kind')} architecture (preset "
            f"{ckpt.get('preset')!r}; differs in {', '.join(diff)})",
        )
