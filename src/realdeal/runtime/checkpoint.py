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


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL = 0x80  # first byte of the legacy torch.save format (a pickle, protocol ≥ 2)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_torch_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True``.

    Any unusable file (missing, empty, text, another format, truncated, holding code) raises
    one :class:`InputError` naming the file: torch itself answers such files with a long
    traceback of varied types (a text file gives ``KeyError`` from deep in the unpickler).
    ``mmap`` memory-maps the zip format (ignored for the legacy format, which cannot be mapped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from e
    is_zip = head.startswith(_ZIP_MAGIC)
    if not is_zip and (not head or head[0] != _PICKLE_PROTOCOL):
        what = (
            "an empty file" if not head else "a text file" if _is_text(head) else "another format"
        )
        raise InputError(path, f"not a PyTorch checkpoint ({what})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a class or function: refused, never built
            raise InputError(
                path,
                "holds objects other than tensors and plain values (refused: weights_only=True)",
            ) from e
        raise InputError(
            path, "not a readable checkpoint (truncated or corrupt pickle data)"
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError … for damaged files
        raise InputError(
            path, f"not a readable checkpoint (truncated or corrupt: {_first_line(e)})"
        ) from e


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut at the end of the sample is still text
        if e.start < len(head) - 3:
            return False
    return b"\0" not in head


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint safely; raise :class:`InputError` (one line) if it is unusable.

    ``kind`` is the model kind the caller needs; a checkpoint of another kind is refused.
    """
    ckpt = read_torch_file(path, map_location)
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
