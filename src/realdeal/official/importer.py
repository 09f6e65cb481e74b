"""Converting the released files into realdeal checkpoints (one function per kind).

Each writes the kind's typed payload (:mod:`realdeal.runtime.checkpoint`) with the released
weights as both the training and the EMA weights, step 0 and preset ``official``, and records
where the weights came from in ``imported_from``. An output that is one of the input files
(the same path, a link to it, or the same file under another name) is refused before anything
is read; the output is written under a temporary name beside it and renamed into place, so a
failed or refused import leaves the files on disk as they were.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realdeal.config import to_dict
from realdeal.data.dataset import PreparedDataset
from realdeal.diffusion.schedule import ScheduleConfig
from realdeal.errors import ConfigError, InputError
from realdeal.models.latent_scaling import OFFICIAL_RANGES, LatentScaler
from realdeal.official.convert import (
    convert_autoencoder_state,
    convert_unet_state,
    infer_unet_config,
)
from realdeal.official.files import (
    KINDS,
    OFFICIAL_IMAGE_SHAPE,
    OFFICIAL_SPACING,
    OFFICIAL_WINDOW,
    PRESET,
    OfficialKind,
    detect_kind,
    provenance,
    read_official,
    refuse_realdeal,
    unet_state,
)
from realdeal.pipelines.autoencoder import checkpoint_fingerprint
from realdeal.presets import LDMRunConfig, RefinerRunConfig
from realdeal.runtime.checkpoint import (
    FORMAT,
    AutoencoderCheckpoint,
    EmbeddedAutoencoder,
    LDMCheckpoint,
    RefinerCheckpoint,
    is_safetensors_file,
    load_checkpoint,
    save_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from realdeal.data.dataset import PreparedDataset
    from realdeal.diffusion.schedule import ScheduleConfig
    from realdeal.models.unet import UNetConfig


def import_autoencoder(
    src: str | os.PathLike, out: str | os.PathLike, ckpt: Mapping[str, Any] | None = None
) -> Path:
    """Convert ``autoencoder_checkpoint.pth`` into a realdeal autoencoder checkpoint ``out``."""
    refuse_overwrite(out, src)
    ckpt = read_official(src) if ckpt is None else ckpt
    if not isinstance(ckpt.get("model"), Mapping):
        raise InputError(src, "has no 'model' state dict (not the released autoencoder)")
    cfg, state = convert_autoencoder_state(ckpt["model"], src)
    model_config = to_dict(cfg)
    payload = AutoencoderCheckpoint(
        preset=PRESET,
        config={"preset": PRESET, "model": model_config},
        model_config=model_config,
        model=state,
        ema=state,
        image_shape=OFFICIAL_IMAGE_SHAPE,
        dataset="",
        imported_from=provenance(src, ckpt, "tot_loss"),
    )
    return save_checkpoint(out, payload)


def embedded_autoencoder(path: str | os.PathLike) -> EmbeddedAutoencoder:
    """The autoencoder an LDM checkpoint carries, from a released or a realdeal autoencoder file."""

    ckpt = None if is_safetensors_file(path) else read_official(path)
    if ckpt is None or ckpt.get("format") == FORMAT:  # a realdeal file (.pt or .safetensors)
        ae = load_checkpoint(path, kind="autoencoder")
        model_config, state, preset = ae.model_config, ae.weights(), ae.preset
    else:
        if detect_kind(ckpt, path) != "autoencoder":
            raise InputError(path, "is not the released autoencoder (--autoencoder)")
        cfg, state = convert_autoencoder_state(ckpt["model"], path)
        model_config, preset = to_dict(cfg), PRESET
    return EmbeddedAutoencoder(
        model_config=model_config,
        preset=preset,
        ema=state,
        fingerprint=checkpoint_fingerprint(path),
    )


def import_ldm(
    src: str | os.PathLike,
    autoencoder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int] = OFFICIAL_IMAGE_SHAPE,
    latent_ranges: tuple[tuple[float, float], ...] = OFFICIAL_RANGES,
    data: str | os.PathLike | None = None,
    norm_num_groups: int | None = None,
    num_head_channels: int | Sequence[int] | None = None,
    ckpt: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``checkpoint750.pth`` (+ its autoencoder) into a realdeal LDM checkpoint ``out``.

    ``autoencoder``: ``autoencoder_checkpoint.pth`` or its realdeal import (the LDM checkpoint
    carries its decoder). ``image_shape``: the grid samples are decoded to (X, Y, Z), each
    divisible by 4 × the U-Net's size multiple. ``latent_ranges``: per-channel [lo, hi] of
    the latent scaling (the official hard-coded ranges). ``data``: a prepared dataset on
    that grid, recorded as the default geometry for ``realdeal sample``. ``norm_num_groups``,
    ``num_head_channels``: see :func:`realdeal.official.convert.infer_unet_config`.
    """

    refuse_overwrite(out, src, autoencoder)
    ckpt = read_official(src) if ckpt is None else ckpt
    cfg, state = _convert_unet(ckpt, src, norm_num_groups, num_head_channels)
    ae = embedded_autoencoder(autoencoder)
    latent_channels = ae.model_config["latent_channels"]
    if cfg.in_channels != latent_channels or cfg.out_channels != latent_channels:
        raise InputError(
            autoencoder,
            f"has {latent_channels} latent channels, the LDM U-Net takes {cfg.in_channels}",
        )
    m = 4 * cfg.size_multiple
    if len(image_shape) != 3 or any(s % m or s < m for s in image_shape):
        raise ConfigError(f"image shape {tuple(image_shape)} must be 3 positive multiples of {m}")
    scaler = LatentScaler(tuple(r[0] for r in latent_ranges), tuple(r[1] for r in latent_ranges))
    if len(scaler.lo) != latent_channels:
        raise ConfigError(f"{len(scaler.lo)} latent ranges for {latent_channels} latent channels")
    dataset = _check_dataset(data, image_shape)
    run = LDMRunConfig(preset=PRESET, unet=cfg, schedule=_released_schedule("v_prediction"))
    payload = LDMCheckpoint(
        **_unet_fields(run, state),
        latent_scaling=scaler.to_dict(),
        latent_shape=(latent_channels, *(s // 4 for s in image_shape)),
        image_shape=tuple(image_shape),  # type: ignore[arg-type]
        dataset=str(dataset.root) if dataset else "",
        autoencoder=ae,
        imported_from=provenance(src, ckpt, "best_loss"),
    )
    return save_checkpoint(out, payload)


def import_refiner(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    window: int = OFFICIAL_WINDOW,
    spacing: tuple[float, float, float] = OFFICIAL_SPACING,
    data: str | os.PathLike | None = None,
    norm_num_groups: int | None = None,
    num_head_channels: int | Sequence[int] | None = None,
    ckpt: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``checkpoint2690.pth`` into a realdeal refiner checkpoint ``out``.

    ``window``: patch side in voxels (64); ``spacing``: voxel size (mm) inputs must have.
    ``data``: a prepared dataset whose intensity scaler and spacing are stored, so that
    ``realdeal refine`` also accepts raw-intensity inputs. ``norm_num_groups``,
    ``num_head_channels``: see :func:`realdeal.official.convert.infer_unet_config`.
    """

    refuse_overwrite(out, src)
    ckpt = read_official(src) if ckpt is None else ckpt
    cfg, state = _convert_unet(ckpt, src, norm_num_groups, num_head_channels)
    dataset = _check_dataset(data, None)
    try:
        run = RefinerRunConfig(
            preset=PRESET, window=window, unet=cfg, schedule=_released_schedule("epsilon")
        )
    except ConfigError as e:
        raise InputError(src, f"not usable as a refiner ({e})") from e
    payload = RefinerCheckpoint(
        **_unet_fields(run, state),
        window=window,
        image_shape=tuple(dataset.shape if dataset else OFFICIAL_IMAGE_SHAPE),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in (dataset.spacing if dataset else spacing)),  # type: ignore[arg-type]
        scaler=dataset.scaler.to_dict() if dataset else None,
        dataset=str(dataset.root) if dataset else "",
        imported_from=provenance(src, ckpt, "best_loss"),
    )
    return save_checkpoint(out, payload)


def import_official(
    src: str | os.PathLike,
    out: str | os.PathLike,
    kind: OfficialKind | None = None,
    autoencoder: str | os.PathLike | None = None,
    **options: Any,
) -> tuple[OfficialKind, Path]:
    """Convert any released file into a realdeal checkpoint; ``(kind, out)``.

    ``kind`` is detected from the keys and shapes unless given. The LDM needs
    ``autoencoder``; ``options`` (``None`` = unset) go to :func:`import_ldm` or
    :func:`import_refiner`; one that does not apply to the kind is a ``ConfigError``.
    ``out`` must not be ``src`` or ``autoencoder`` (:func:`refuse_overwrite`).
    """
    refuse_overwrite(out, src, autoencoder)
    ckpt = read_official(src)
    refuse_realdeal(ckpt, src)
    detected = detect_kind(ckpt, src) if kind is None else kind
    if detected not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    options = {k: v for k, v in options.items() if v is not None}
    unused = sorted(set(options) - _OPTIONS[detected])
    if unused:
        raise ConfigError(f"option(s) {', '.join(unused)} do not apply to the released {detected}")
    if autoencoder is not None and detected != "ldm":
        raise ConfigError(f"--autoencoder applies to the LDM only, not the released {detected}")
    if detected == "autoencoder":
        return detected, import_autoencoder(src, out, ckpt)
    if detected == "ldm":
        if autoencoder is None:
            raise InputError(
                src,
                "is the released LDM; pass --autoencoder autoencoder_checkpoint.pth (an LDM "
                "checkpoint carries its decoder)",
            )
        return detected, import_ldm(src, autoencoder, out, ckpt=ckpt, **options)
    return detected, import_refiner(src, out, ckpt=ckpt, **options)


_OPTIONS: dict[str, set[str]] = {
    "autoencoder": set(),
    "ldm": {"image_shape", "latent_ranges", "data", "norm_num_groups", "num_head_channels"},
    "refiner": {"window", "spacing", "data", "norm_num_groups", "num_head_channels"},
}


def refuse_overwrite(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Raise :class:`InputError` if ``out`` is one of ``inputs`` (``None`` ones are skipped).

    The same file: equal paths once links and ``..`` are resolved, or, for an existing
    ``out``, the same file on disk (a hard link). Nothing is read or written.
    """
    target = Path(out)
    for src in inputs:
        if src is None:
            continue
        same = target.resolve() == Path(src).resolve()
        if not same and target.exists() and Path(src).exists():
            try:
                same = os.path.samefile(target, src)
            except OSError:
                same = False
        if same:
            raise InputError(
                out, f"is the input file {str(src)!r}; write the realdeal checkpoint elsewhere"
            )


def _convert_unet(
    ckpt: Mapping[str, Any],
    src: str | os.PathLike,
    norm_num_groups: int | None,
    num_head_channels: int | Sequence[int] | None = None,
) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    """(config, MONAI 1.x state dict) of the released U-Net in ``ckpt``."""
    old = unet_state(ckpt, src)
    cfg = infer_unet_config(old, norm_num_groups, src, num_head_channels)
    return cfg, convert_unet_state(old, cfg, src)


def _released_schedule(prediction_type: str) -> ScheduleConfig:
    """The noise schedule both released U-Nets were trained with (docs/method.md#spec-4, #spec-5)."""

    return ScheduleConfig(
        schedule="scaled_linear_beta",
        beta_start=0.0015,
        beta_end=0.0205,
        prediction_type=prediction_type,  # type: ignore[arg-type]
    )


def _unet_fields(run: Any, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The payload fields every imported U-Net shares (``run``: its run config)."""
    return dict(
        preset=PRESET,
        config=to_dict(run),
        model_config=to_dict(run.unet),
        model=state,
        ema=state,
    )


def _check_dataset(
    data: str | os.PathLike | None, image_shape: tuple[int, ...] | None
) -> PreparedDataset | None:
    """The prepared dataset ``data`` (``None`` if not given), checked against ``image_shape``."""
    if data is None:
        return None

    ds = PreparedDataset(data)
    if image_shape is not None and tuple(ds.shape) != tuple(image_shape):
        raise InputError(
            ds.root, f"has grid {tuple(ds.shape)}, the model generates {tuple(image_shape)}"
        )
    return ds
