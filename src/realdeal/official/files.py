"""The authors' released files: what they hold, reading them, telling them apart.

See :mod:`realdeal.official` for the three files and their layouts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from realdeal.errors import InputError
from realdeal.runtime.checkpoint import FORMAT, read_torch_file

OfficialKind = Literal["autoencoder", "ldm", "refiner"]
KINDS: tuple[OfficialKind, ...] = ("autoencoder", "ldm", "refiner")

#: Grid, voxel size and refiner window of the released models (docs/method.md#spec-2, #spec-5).
OFFICIAL_IMAGE_SHAPE = (224, 288, 224)
OFFICIAL_SPACING = (0.7, 0.7, 0.7)
OFFICIAL_WINDOW = 64
#: Group count of MONAI Generative's ``DiffusionModelUNet`` (its default; the official configs).
OFFICIAL_NORM_GROUPS = 32
#: Buffers of the authors' running-statistics GroupNorm variant (refiner fine-tuning).
GROUPNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
PRESET = "official"


#: A key only the released autoencoder's / a released U-Net's state dict has.
AE_KEY = "in_conv.weight"
UNET_KEY = "conv_in.conv.weight"
#: Input channels of the released U-Nets, by kind.
UNET_IN_CHANNELS = {"ldm": 4, "refiner": 3}


def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a released ``.pth`` file, read with ``weights_only=True`` (memory-mapped).

    Besides tensors and plain values, the file may hold numeric NumPy scalars and 0-d arrays:
    the released autoencoder's ``tot_loss`` is one (made from ``loss.data.cpu().numpy()``).
    Exactly the globals those need are allowed, for this read only (see
    :func:`numpy_loss_globals`); anything else (code, other NumPy objects, object arrays) is
    still refused. Raises :class:`InputError` for a missing, unreadable or non-weights file.
    """
    try:
        with _allow_numpy_numbers():
            ckpt = read_torch_file(path, mmap=True)
    except InputError as e:
        if "Can only build" in str(e.__cause__):  # e.g. a NumPy object or string dtype
            raise InputError(
                path,
                "holds objects other than tensors and plain values (refused: weights_only=True)",
            ) from e.__cause__
        raise
    if not isinstance(ckpt, dict):
        raise InputError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


#: NumPy's numeric dtype codes: bool, signed and unsigned integers, float16/32/64.
_NUMERIC_DTYPES = "?bhilqBHILQefd"


def numpy_loss_globals() -> list[Any]:
    """The globals ``torch.load(weights_only=True)`` needs for numeric NumPy scalars and arrays.

    A NumPy scalar pickles as ``numpy.core.multiarray.scalar(dtype, bytes)`` and an array as
    ``numpy.core.multiarray._reconstruct`` + ``ndarray.__setstate__``; the dtype is rebuilt
    from ``numpy.dtype`` and then given its state, which torch allows only for listed types:
    the dtype classes of :data:`_NUMERIC_DTYPES` (``numpy.dtypes.Float32DType`` …; the
    ``object``, string and structured dtypes are not among them, so such arrays stay refused).
    Files written with NumPy 1.x name the module ``numpy.core.multiarray``, NumPy ≥ 2
    ``numpy._core.multiarray``: both names are listed where PyTorch takes ``(object, name)``
    entries (2.6+), else only the running NumPy's. Empty without NumPy.
    """
    try:
        import numpy  # noqa: F401
    except ImportError:
        return []
    return _numpy_globals(named=_takes_named_globals())


def _numpy_globals(named: bool) -> list[Any]:
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    functions: list[Any] = [core.multiarray.scalar, core.multiarray._reconstruct]
    if named:
        functions = [
            (fn, f"numpy.{pkg}.multiarray.{fn.__name__}")
            for fn in functions
            for pkg in ("core", "_core")
        ]
    dtype_classes = dict.fromkeys(type(np.dtype(c)) for c in _NUMERIC_DTYPES)
    return [*functions, np.dtype, np.ndarray, *dtype_classes]


@functools.cache
def _takes_named_globals() -> bool:
    """Whether this PyTorch reads a NumPy scalar with ``(object, name)`` allowlist entries."""
    import numpy as np

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        return False
    try:
        buf = io.BytesIO()
        torch.save(np.float32(0.5), buf)
        buf.seek(0)
        with safe_globals(_numpy_globals(named=True)):
            return bool(torch.load(buf, weights_only=True) == np.float32(0.5))
    except Exception:  # older PyTorch: entries must be the objects themselves
        return False


@contextlib.contextmanager
def _allow_numpy_numbers() -> Iterator[None]:
    """:func:`numpy_loss_globals` allowed during the block only (with PyTorch ≥ 2.5, which has
    ``torch.serialization.safe_globals``; before, NumPy values stay refused)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    allowed = numpy_loss_globals()
    if safe_globals is None or not allowed:
        yield
        return
    with safe_globals(allowed):
        yield


def detect_kind(ckpt: Mapping[str, Any], path: str | os.PathLike | None = None) -> OfficialKind:
    """Which released file ``ckpt`` is, from its keys and the U-Net's input width."""
    refuse_realdeal(ckpt, path)
    model, unet = ckpt.get("model"), ckpt.get("diffusion")
    if isinstance(model, Mapping) and AE_KEY in strip_prefix(model, path, strict=False):
        return "autoencoder"
    if isinstance(unet, Mapping):
        state = strip_prefix(unet, path, strict=False)
        if UNET_KEY not in state:
            raise InputError(path, f"its 'diffusion' state dict has no {UNET_KEY!r}")
        cin = int(state[UNET_KEY].shape[1])
        for kind, n in UNET_IN_CHANNELS.items():
            if cin == n:
                return kind  # type: ignore[return-value]
        raise InputError(
            path,
            f"U-Net with {cin} input channels is neither the LDM (4) nor the refiner (3); "
            "pass --kind to force one",
        )
    raise InputError(
        path,
        "is not one of the authors' released checkpoints (expected key 'model' with the "
        "autoencoder's weights, or 'diffusion' with a U-Net's); found keys "
        f"{sorted(map(str, ckpt))[:8]}",
    )


def strip_prefix(
    state: Mapping[str, Any], where: str | os.PathLike | None, strict: bool = True
) -> dict[str, Any]:
    """``state`` without DataParallel's ``module.`` prefix (all keys or none must have it)."""
    keys = list(state)
    prefixed = [k.startswith("module.") for k in keys]
    if all(prefixed) and keys:
        return {k[len("module.") :]: v for k, v in state.items()}
    if any(prefixed) and strict:
        raise InputError(where, "state dict mixes keys with and without the 'module.' prefix")
    return dict(state)


def refuse_realdeal(ckpt: Mapping[str, Any], path: str | os.PathLike | None) -> None:
    if ckpt.get("format") == FORMAT:
        raise InputError(
            path, f"is already a realdeal {ckpt.get('kind')} checkpoint; use it as it is"
        )


def unet_state(ckpt: Mapping[str, Any], where: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    unet = ckpt.get("diffusion")
    if not isinstance(unet, Mapping):
        raise InputError(where, "has no 'diffusion' state dict (not a released LDM or refiner)")
    return unet


def provenance(src: str | os.PathLike, ckpt: Mapping[str, Any], loss_key: str) -> dict[str, Any]:
    """File name, epoch and loss of a released file, as plain Python values.

    One-element tensors and NumPy values become Python numbers (a NumPy value stored in a
    realdeal checkpoint would make it unreadable with ``weights_only=True``); anything else
    that is not a plain value is stored as its text.
    """

    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        elif type(v).__module__ == "numpy" and getattr(v, "size", 0) == 1:
            v = v.item()  # NumPy scalar or one-element array
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v)  # also NumPy's float64, a float subclass
        return str(v)

    return {
        "file": Path(src).name,
        "epoch": plain(ckpt.get("epoch")),
        loss_key: plain(ckpt.get(loss_key)),
    }
