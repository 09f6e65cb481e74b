"""Applying a trained autoencoder to prepared datasets: reconstructions D(E(x)) and latents.

Reconstructions are the refiner's training input; they are written into the prepared
dataset (``<root>/reconstructions/<id>.nii.gz``) on its grid and geometry. Latents are
written as safetensors ``(C, x, y, z)`` float32 (raw encoder output in (0, 1)) with a
``latent_scaling.json`` fitted on the training subjects' latents.
Volumes whose sizes are not multiples of 4 are padded with background (−1) and cropped back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from realdeal.data.intensity import ScanOptions, scan_to_model_space
from realdeal.data.io import load_volume, output_paths
from realdeal.errors import InputError
from realdeal.models.autoencoder import Autoencoder
from realdeal.models.latent_scaling import LatentScaler
from realdeal.runtime.device import autocast_context, resolve_precision
from realdeal.utils.fs import (
    atomic_path,
    check_fingerprint,
    file_fingerprint,
    sha256_file,
    write_json_atomic,
    written_after,
)
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)


def pad_to_multiple(
    x: torch.Tensor, m: int, value: float = -1.0
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Pad ``(B, C, X, Y, Z)`` at the high end of each axis to multiples of ``m``."""
    shape = tuple(x.shape[2:])
    pads = [(-s) % m for s in shape]
    if any(pads):
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), value=value)
    return x, shape  # type: ignore[return-value]


@torch.no_grad()
def reconstruct_volume(
    ae: Autoencoder, image: np.ndarray, device: torch.device | str = "cpu", precision: str = "fp32"
) -> np.ndarray:
    """D(E(x)) of one ``(X, Y, Z)`` image in [-1, 1]; same shape, float32."""
    device = torch.device(device)
    dtype, _ = resolve_precision(precision, device)  # type: ignore[arg-type]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    x, shape = pad_to_multiple(x, ae.config.downsampling)
    with autocast_context(dtype, device):
        y = ae(x).float()
    return y[0, 0, : shape[0], : shape[1], : shape[2]].cpu().numpy()


@torch.no_grad()
def encode_volume(
    ae: Autoencoder, image: np.ndarray, device: torch.device | str = "cpu", precision: str = "fp32"
) -> torch.Tensor:
    """Raw latent ``(C, x, y, z)`` float32 on CPU of one ``(X, Y, Z)`` image."""
    device = torch.device(device)
    dtype, _ = resolve_precision(precision, device)  # type: ignore[arg-type]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    x, _ = pad_to_multiple(x, ae.config.downsampling)
    with autocast_context(dtype, device):
        z = ae.encode(x).float()
    return z[0].cpu()


def reconstruct_dataset(
    ae: Autoencoder,
    dataset: Any,
    ids: Sequence[str],
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    overwrite: bool = True,
) -> list[Path]:
    """Write D(E(x)) of each subject into ``dataset`` as derived kind ``"reconstructions"``."""
    written = []
    for sid in progress(ids, desc="reconstruct", unit="subject"):
        if not overwrite and dataset.has_derived("reconstructions", sid):
            continue
        recon = reconstruct_volume(ae, dataset.load_image(sid).data, device, precision)
        written.append(dataset.save_derived("reconstructions", sid, recon))
    return written


def reconstruct_files(
    ae: Autoencoder,
    files: Sequence[Path],
    out: str | os.PathLike,
    options: Any = None,
    stored: Any = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """D(E(x)) of NIfTI files (your own scans) into ``out`` (a folder, or a file for one input).

    Each scan is put into model space by :func:`realdeal.data.intensity.scan_to_model_space`
    (``options``: a :class:`~realdeal.data.intensity.ScanOptions`; ``stored``: the training
    set's :class:`~realdeal.data.transforms.IntensityScaler` if known) and the reconstruction
    is written back in the scan's units, orientation, affine and header. Returns one record per
    scan (input, output, intensity mapping, seconds).
    """
    import time

    options = options or ScanOptions()
    records = []
    for src, dst in progress(
        list(zip(files, output_paths(files, out), strict=True)), desc="reconstruct", unit="scan"
    ):
        t0 = time.perf_counter()
        vol = load_volume(src)
        scan = scan_to_model_space(vol, options, stored, percentiles)
        recon = reconstruct_volume(ae, scan.data, device, precision)
        vol.with_data(scan.restore(recon)).save(dst)
        records.append({
            "input": str(src), "output": str(dst), "intensity": scan.space.to_dict(),
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    return records


def save_latent(
    path: str | os.PathLike, z: torch.Tensor, metadata: dict[str, str] | None = None
) -> Path:
    """Write one latent ``(C, x, y, z)`` as safetensors (key ``"latent"``), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"latent": z.contiguous().float()}, str(tmp), metadata=metadata or {})
    return path


def load_latent(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, str]]:
    """(latent, metadata) from a file written by :func:`save_latent`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("latent"), dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise InputError(path, f"not a readable latent file ({e})") from e


def read_latents(
    folder: str | os.PathLike,
    ids: Sequence[str],
    autoencoder_id: str,
    shape: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """``{id: raw latent}`` (float32) of ``ids`` from ``folder/<id>.safetensors``, as
    :func:`encode_dataset` or ``realdeal encode`` wrote them (any float dtype: a float16 copy
    made to move latents about is read as float32), without the images they came from.

    Each must be there, be made by the autoencoder whose fingerprint is ``autoencoder_id``
    (its metadata says so) and, all of them, have one shape (``shape`` when given); otherwise
    :class:`InputError` naming the folder or the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "latents folder not found")
    missing = [s for s in ids if not (folder / f"{s}.safetensors").is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(folder, f"has no latent of {missing[0]}{more} (<id>.safetensors)")
    out: dict[str, torch.Tensor] = {}
    for sid in ids:
        path = folder / f"{sid}.safetensors"
        z, meta = load_latent(path)
        made_by = meta.get("autoencoder")
        if made_by != autoencoder_id:
            raise InputError(
                path,
                f"was encoded by autoencoder {made_by or 'unknown'}, not by --autoencoder "
                f"({autoencoder_id}); encode the data with that autoencoder (realdeal encode)",
            )
        if not z.is_floating_point() or z.ndim != 4:
            raise InputError(
                path,
                f"holds a {z.dtype} tensor of shape {tuple(z.shape)}, not a latent (C, x, y, z)",
            )
        want = tuple(shape) if shape is not None else next(iter(out.values()), z).shape
        if tuple(z.shape) != tuple(want):
            raise InputError(path, f"has shape {tuple(z.shape)}, expected {tuple(want)}")
        out[sid] = z.float()
    return out


def latents_fingerprint(folder: str | os.PathLike, ids: Sequence[str]) -> str:
    """Content fingerprint of the latents of ``ids`` in ``folder`` (sha256 over their files)."""
    import hashlib

    h = hashlib.sha256()
    for sid in ids:
        h.update(f"{sid}:{sha256_file(Path(folder) / f'{sid}.safetensors')}\n".encode())
    return h.hexdigest()


LATENT_CACHE_VERSION = "2"
"""Latent files that record their input's fingerprint (metadata ``cache``); earlier ones don't."""


def encode_dataset(
    ae: Autoencoder,
    dataset: Any,
    ids: Sequence[str],
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    autoencoder_id: str = "",
    train_ids: Sequence[str] | None = None,
    write: bool = True,
) -> dict[str, torch.Tensor]:
    """Encode subjects to ``out_dir/<id>.safetensors``; reuse entries that are still valid.

    An entry is the latent of one image file by one autoencoder at one precision: its metadata
    records ``autoencoder_id`` (the autoencoder file's fingerprint), ``precision`` and the
    fingerprint of the image file (sha256, size, modification time), and it is reused only
    while all three match — an image that was re-prepared, or another autoencoder, makes it
    anew. An entry written before entries recorded their image (``realdeal`` ≤ this change) is
    kept, and its record completed, when it was made by the same autoencoder in fp32 (the only
    precision LDM training encodes with) after the image last changed; otherwise it is made
    anew. A file at an entry's name that is not a realdeal latent is refused, not replaced.

    Writes ``out_dir/latent_scaling.json`` fitted on the latents of ``train_ids`` (default: the
    encoded subjects of the dataset's train split). ``write=False`` only reads (ranks other
    than 0 of a torchrun job): stale entries are then encoded in memory. Returns
    ``{id: raw latent}``.
    """

    out_dir = Path(out_dir)
    latents: dict[str, torch.Tensor] = {}
    for sid in progress(ids, desc="encode", unit="subject"):
        path = out_dir / f"{sid}.safetensors"
        src = Path(dataset.image_path(sid))
        if path.exists():
            z, meta = load_latent(path)
            if "autoencoder" not in meta:
                raise InputError(
                    path, "is not a realdeal latent (no autoencoder in its metadata); refusing "
                    "to replace it (choose another folder)",
                )  # fmt: skip
            fp = _valid_entry(meta, path, src, autoencoder_id, precision)
            if fp is not None:
                latents[sid] = z
                new_meta = _latent_meta(sid, autoencoder_id, precision, fp)
                if write and meta != new_meta:  # complete or refresh the record, same latent
                    save_latent(path, z, new_meta)
                continue
        fp = file_fingerprint(src)
        z = encode_volume(ae, dataset.load_image(sid).data, device, precision)
        if write:
            save_latent(path, z, _latent_meta(sid, autoencoder_id, precision, fp))
        latents[sid] = z
    fit_ids = [
        s for s in (train_ids if train_ids is not None else dataset.ids("train")) if s in latents
    ]
    if fit_ids and write:
        scaler = LatentScaler.fit(latents[s] for s in fit_ids)
        write_json_atomic(
            out_dir / "latent_scaling.json",
            {**scaler.to_dict(), "fitted_on": len(fit_ids), "autoencoder": autoencoder_id},
        )
    return latents


def _latent_meta(sid: str, autoencoder_id: str, precision: str, fp: dict) -> dict[str, str]:
    """The metadata of a latent entry (safetensors metadata values are strings)."""
    return {
        "autoencoder": autoencoder_id,
        "subject": str(sid),
        "cache": LATENT_CACHE_VERSION,
        "precision": precision,
        "input_sha256": fp["sha256"],
        "input_size": str(fp["size"]),
        "input_mtime_ns": str(fp["mtime_ns"]),
    }


def _valid_entry(
    meta: dict[str, str], path: Path, src: Path, autoencoder_id: str, precision: str
) -> dict | None:
    """The image's fingerprint if the latent at ``path`` (metadata ``meta``) is the present
    image's by this autoencoder at this precision, else None."""

    if meta.get("autoencoder") != autoencoder_id:
        return None
    if meta.get("cache") is None:  # an entry from before input fingerprints
        if precision == "fp32" and written_after(path, src):
            return file_fingerprint(src)
        return None
    if meta.get("precision") != precision:
        return None
    try:
        stored = {
            "sha256": meta["input_sha256"],
            "size": int(meta["input_size"]),
            "mtime_ns": int(meta["input_mtime_ns"]),
        }
    except (KeyError, ValueError):
        return None
    return check_fingerprint(src, stored)


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Short content hash of a checkpoint file (ties cached latents to their autoencoder)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def require_reconstructions(dataset: Any, ids: Sequence[str]) -> None:
    """Raise :class:`InputError` unless every subject in ``ids`` has a reconstruction."""

    missing = [s for s in ids if not dataset.has_derived("reconstructions", s)]
    if missing:
        raise InputError(
            dataset.root,
            f"has no autoencoder reconstructions for {len(missing)} of {len(ids)} subject(s) (first: {missing[0]}); "
            "run `realdeal reconstruct --autoencoder CKPT --data DATASET` first",
        )
