"""Import the authors' released checkpoints (SPEC §3–5) as realdeal checkpoints.

The authors released three ``torch.save`` files trained on full HCP:

``autoencoder_checkpoint.pth``  ``{"epoch", "model", "optimizer", "tot_loss"}``
``checkpoint750.pth`` (LDM)     ``{"epoch", "diffusion", "optimizer", "best_loss"}``
``checkpoint2690.pth`` (refiner) same keys as the LDM

``diffusion`` is the state dict of a ``torch.nn.DataParallel``-wrapped MONAI Generative 0.2.x
``DiffusionModelUNet``: keys start with ``module.`` and use that package's attention layout
(``X.to_q``, ``X.proj_attn``, upsampler ``conv``), which :func:`convert_unet_state` maps to
MONAI 1.x names exactly as ``DiffusionModelUNet.load_old_state_dict`` does, but strictly: every
key must be used and every parameter found. The refiner's norm layers carry the buffers of the
authors' running-statistics GroupNorm variant (``running_mean``, ``running_var``,
``num_batches_tracked``, one value per group); the authors ran inference in train mode, i.e.
with ordinary per-sample GroupNorm statistics, so the buffers are dropped.

The released autoencoder differs from :class:`realdeal.models.autoencoder.Autoencoder` in more
than its residual-block defect (norm after the activation in the resamplers, no norm in the
residual blocks or after the first decoder conv), so it is hosted by its own module,
:class:`OfficialAutoencoder`, whose submodule names are the released ones. Its model config
carries ``layout = "official"``; :func:`official_autoencoder_from_state` builds it.

Tensors are ``(B, C, X, Y, Z)`` as everywhere in realdeal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from realdeal.config import from_dict, to_dict
from realdeal.errors import ConfigError, InputError
from realdeal.models.latent_scaling import OFFICIAL_RANGES, LatentScaler
from realdeal.runtime.checkpoint import read_torch_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from realdeal.data.dataset import PreparedDataset
    from realdeal.models.unet import UNetConfig

log = logging.getLogger(__name__)

OfficialKind = Literal["autoencoder", "ldm", "refiner"]
KINDS: tuple[OfficialKind, ...] = ("autoencoder", "ldm", "refiner")

#: Grid, voxel size and refiner window of the released models (SPEC §2, §5).
OFFICIAL_IMAGE_SHAPE = (224, 288, 224)
OFFICIAL_SPACING = (0.7, 0.7, 0.7)
OFFICIAL_WINDOW = 64
#: Group count of MONAI Generative's ``DiffusionModelUNet`` (its default; the official configs).
OFFICIAL_NORM_GROUPS = 32
#: Buffers of the authors' running-statistics GroupNorm variant (refiner fine-tuning).
GROUPNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
PRESET = "official"

_AE_KEY = "in_conv.weight"
_UNET_KEY = "conv_in.conv.weight"
_UNET_IN_CHANNELS = {"ldm": 4, "refiner": 3}


# --------------------------------------------------------------------------- autoencoder


@dataclasses.dataclass(frozen=True)
class OfficialAutoencoderConfig:
    """Architecture of the released autoencoder (SPEC §3; 3,549,447 parameters by default).

    ``layout`` marks a model config as this architecture (see
    :func:`official_autoencoder_from_state`). ``resblock_defect`` is the explicit legacy
    switch: ``True`` reproduces the released residual block ``lrelu(conv2(x) + x)`` (its
    ``conv1`` is unused); ``False`` gives ``lrelu(conv2(lrelu(conv1(x))) + x)``.
    """

    layout: Literal["official"] = "official"
    in_channels: int = 1
    base_channels: int = 64
    bottleneck: int = 32
    latent_channels: int = 4
    negative_slope: float = 0.01
    resblock_defect: bool = True

    def __post_init__(self) -> None:
        if min(self.in_channels, self.base_channels, self.bottleneck, self.latent_channels) < 1:
            raise ConfigError(f"official autoencoder widths must be positive: {self}")

    @property
    def downsampling(self) -> int:
        """Spatial compression factor per axis."""
        return 4


class OfficialResBlock(nn.Module):
    """The released residual block: 3³ ``conv1``, ``conv2``, same width, no norm, no skip conv.

    With ``defect=True`` (as released) ``y = lrelu(conv2(x) + x)``: ``conv1``'s output was
    computed and discarded, so it is not computed here (the result is the same).
    """

    def __init__(self, ch: int, negative_slope: float, defect: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv3d(ch, ch, 3, padding=1)
        self.negative_slope = negative_slope
        self.defect = defect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.defect else F.leaky_relu(self.conv1(x), self.negative_slope)
        return F.leaky_relu(self.conv2(h) + x, self.negative_slope)


class OfficialResample(nn.Module):
    """``down``: trilinear ×0.5 → 3³ conv → lrelu; ``up``: nearest ×2 → 3³ conv → lrelu.

    Assumption: the released ×0.5 is ``F.interpolate(scale_factor=0.5, mode="trilinear")``
    with PyTorch's default ``align_corners=False`` (for even sizes: the 2×2×2 mean).
    """

    def __init__(self, cin: int, cout: int, mode: Literal["down", "up"], negative_slope: float):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.mode = mode
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "down":
            x = F.interpolate(x, scale_factor=0.5, mode="trilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.leaky_relu(self.conv(x), self.negative_slope)


class OfficialAutoencoder(nn.Module):
    """The released autoencoder, module names as in ``autoencoder_checkpoint.pth``.

    Offers the interface of :class:`~realdeal.models.autoencoder.Autoencoder` (``config``,
    ``encode``, ``decode``, ``forward``, ``check_shape``), so ``realdeal reconstruct``,
    ``encode`` and ``sample`` use it unchanged. Images ``(B, 1, X, Y, Z)`` in [-1, 1], sizes
    divisible by 4; latents ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1). ``dbn4`` is stored, unused.
    """

    def __init__(self, cfg: OfficialAutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or OfficialAutoencoderConfig()
        b, b2 = cfg.base_channels, 2 * cfg.base_channels
        slope, defect = cfg.negative_slope, cfg.resblock_defect
        self.in_conv = nn.Conv3d(cfg.in_channels, b, 3, padding=1)
        self.eresblock1 = OfficialResBlock(b, slope, defect)
        self.down1 = OfficialResample(b, b2, "down", slope)
        self.eresblock2 = OfficialResBlock(b2, slope, defect)
        self.down2 = OfficialResample(b2, b, "down", slope)
        self.eresblock3 = OfficialResBlock(b, slope, defect)
        self.echan_conv1 = nn.Conv3d(b, cfg.bottleneck, 1)
        self.echan_conv2 = nn.Conv3d(cfg.bottleneck, cfg.latent_channels, 1)
        self.ebn1, self.ebn2 = nn.BatchNorm3d(b), nn.BatchNorm3d(b2)
        self.ebn3, self.ebn4 = nn.BatchNorm3d(b), nn.BatchNorm3d(cfg.bottleneck)
        self.dchan_conv1 = nn.Conv3d(cfg.latent_channels, cfg.bottleneck, 1)
        self.dchan_conv2 = nn.Conv3d(cfg.bottleneck, b, 1)
        self.dbn1, self.dbn2 = nn.BatchNorm3d(b), nn.BatchNorm3d(b2)
        self.dbn3, self.dbn4 = nn.BatchNorm3d(b), nn.BatchNorm3d(cfg.in_channels)
        self.dresblock1 = OfficialResBlock(b, slope, defect)
        self.up1 = OfficialResample(b, b2, "up", slope)
        self.dresblock2 = OfficialResBlock(b2, slope, defect)
        self.up2 = OfficialResample(b2, b, "up", slope)
        self.dresblock3 = OfficialResBlock(b, slope, defect)
        self.out_conv = nn.Conv3d(b, cfg.in_channels, 3, padding=1)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.config.negative_slope)

    def check_shape(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``x`` is ``(B, C, X, Y, Z)`` with sizes divisible by 4."""
        f, c = self.config.downsampling, self.config.in_channels
        if x.ndim != 5 or x.shape[1] != c or any(s % f for s in x.shape[2:]):
            raise ConfigError(
                f"autoencoder input must be (B, {c}, X, Y, Z) with X, Y, Z divisible by {f}; "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` in [-1, 1] → ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1)."""
        self.check_shape(x)
        h = self._act(self.ebn1(self.in_conv(x)))
        h = self.eresblock1(h)
        h = self.eresblock2(self.ebn2(self.down1(h)))
        h = self.eresblock3(self.ebn3(self.down2(h)))
        h = self._act(self.ebn4(self.echan_conv1(h)))
        return torch.sigmoid(self.echan_conv2(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, 4, x, y, z)`` → image ``(B, 1, 4x, 4y, 4z)`` in [-1, 1]."""
        h = self._act(self.dchan_conv1(z))
        h = self._act(self.dbn1(self.dchan_conv2(h)))
        h = self.dresblock1(h)
        h = self.dresblock2(self.dbn2(self.up1(h)))
        h = self.dresblock3(self.dbn3(self.up2(h)))
        return torch.sigmoid(self.out_conv(h)) * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def is_official_autoencoder_config(config: Mapping[str, Any]) -> bool:
    """Whether an autoencoder model config (dict) describes :class:`OfficialAutoencoder`."""
    return config.get("layout") == "official"


def official_autoencoder_from_state(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str | os.PathLike | None
) -> OfficialAutoencoder:
    """An :class:`OfficialAutoencoder` in eval mode from its config dict and state dict.

    The hook :func:`realdeal.models.loading.autoencoder_from_state` calls for model configs
    with ``layout = "official"``.
    """
    model = OfficialAutoencoder(from_dict(OfficialAutoencoderConfig, dict(config)))
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as e:
        raise InputError(
            where,
            f"weights do not fit the released autoencoder layout ({str(e).splitlines()[0]})",
        ) from e
    return model.eval()


def convert_autoencoder_state(
    state: Mapping[str, torch.Tensor], where: str | os.PathLike | None = None
) -> tuple[OfficialAutoencoderConfig, dict[str, torch.Tensor]]:
    """(config, state dict) of :class:`OfficialAutoencoder` from the released ``model`` dict.

    Widths are read from the weights (``in_conv``, ``echan_conv1``, ``echan_conv2``), so the
    released size and smaller test networks both load; the state must fit exactly.
    """
    state = _strip_prefix(state, where)
    missing = [k for k in (_AE_KEY, "echan_conv1.weight", "echan_conv2.weight") if k not in state]
    if missing:
        raise InputError(where, f"autoencoder weights lack {missing[0]!r}")
    base, cin = state[_AE_KEY].shape[:2]
    cfg = OfficialAutoencoderConfig(
        in_channels=int(cin),
        base_channels=int(base),
        bottleneck=int(state["echan_conv1.weight"].shape[0]),
        latent_channels=int(state["echan_conv2.weight"].shape[0]),
    )
    _check_exact(_meta_state(lambda: OfficialAutoencoder(cfg)), state, where, "autoencoder")
    return cfg, dict(state)


# --------------------------------------------------------------------------- U-Nets


def infer_unet_config(
    state: Mapping[str, torch.Tensor],
    norm_num_groups: int | None = None,
    where: str | os.PathLike | None = None,
) -> UNetConfig:
    """The :class:`~realdeal.models.unet.UNetConfig` of an old-layout U-Net state dict.

    Widths, levels, residual blocks per level and attention levels come from the weights.
    Attention uses one head per level (head channels = the level's width), as both released
    configs (LDM 0/512/768, refiner 0/0/256) — the head count does not show in weight shapes.
    ``norm_num_groups``: from the GroupNorm-variant buffers when present, else MONAI
    Generative's default 32, unless given.
    """
    from realdeal.models.unet import UNetConfig

    state = _strip_prefix(state, where)
    if _UNET_KEY not in state:
        raise InputError(where, f"U-Net weights lack {_UNET_KEY!r}")
    levels = sorted({int(k.split(".")[1]) for k in state if k.startswith("down_blocks.")})
    if not levels or levels != list(range(len(levels))):
        raise InputError(where, "U-Net weights have no consecutive down_blocks")
    try:
        channels = tuple(
            int(state[f"down_blocks.{i}.resnets.0.conv2.conv.weight"].shape[0]) for i in levels
        )
        out_channels = int(state["out.2.conv.weight"].shape[0])
    except KeyError as e:
        raise InputError(where, f"U-Net weights lack {e.args[0]!r}") from None
    res_blocks = {int(k.split(".")[3]) for k in state if k.startswith("down_blocks.0.resnets.")}
    attention = tuple(
        any(k.startswith(f"down_blocks.{i}.attentions.") for k in state) for i in levels
    )
    if norm_num_groups is None:
        groups = {
            int(v.shape[0]) for k, v in state.items() if k.endswith(".running_mean") and v.ndim == 1
        }
        if len(groups) > 1:
            raise InputError(where, f"GroupNorm buffers disagree on the group count: {groups}")
        norm_num_groups = groups.pop() if groups else OFFICIAL_NORM_GROUPS
    try:
        return UNetConfig(
            in_channels=int(state[_UNET_KEY].shape[1]),
            out_channels=out_channels,
            channels=channels,
            num_res_blocks=len(res_blocks),
            attention_levels=attention,
            num_head_channels=tuple(
                c if a else 0 for c, a in zip(channels, attention, strict=True)
            ),
            norm_num_groups=norm_num_groups,
        )
    except ConfigError as e:
        raise InputError(where, f"U-Net weights give an unusable architecture ({e})") from e


def old_unet_key(new_key: str) -> str:
    """The MONAI Generative 0.2.x name of a MONAI 1.x ``DiffusionModelUNet`` state key.

    The inverse of what ``DiffusionModelUNet.load_old_state_dict`` renames: self-attention
    ``X.attn.to_{q,k,v}`` ← ``X.to_{q,k,v}``, ``X.attn.out_proj`` ← ``X.proj_attn``, and the
    upsampler's ``postconv`` ← ``conv``.
    """
    for name in ("to_q", "to_k", "to_v"):
        new_key = new_key.replace(f".attn.{name}.", f".{name}.")
    return new_key.replace(".attn.out_proj.", ".proj_attn.").replace("postconv", "conv")


def convert_unet_state(
    old_state: Mapping[str, torch.Tensor], cfg: UNetConfig, where: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """MONAI 1.x state dict of the U-Net ``cfg`` from an old-layout (``module.``) state dict.

    Strict: every parameter of the new model must be found with its shape, and every old key
    used, except the GroupNorm-variant buffers of norm layers, which are dropped (see module
    docstring). Tensors are not copied.
    """
    from realdeal.models.unet import build_unet

    old = _strip_prefix(old_state, where)
    with torch.device("meta"):
        model = build_unet(cfg)
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    new: dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        src = old_unet_key(key)
        if src not in old:
            raise InputError(where, f"U-Net weights lack {src!r} (for {key!r})")
        if tuple(old[src].shape) != tuple(ref.shape):
            raise InputError(
                where,
                f"U-Net weight {src!r} has shape {tuple(old[src].shape)}, the architecture "
                f"needs {tuple(ref.shape)}",
            )
        new[key] = old[src]
    used = {old_unet_key(k) for k in new}
    dropped = []
    for key in old:
        if key in used:
            continue
        prefix, _, leaf = key.rpartition(".")
        if leaf in GROUPNORM_BUFFERS and prefix in norms:
            dropped.append(key)
            continue
        raise InputError(where, f"unexpected U-Net weight {key!r} for architecture {cfg}")
    if dropped:
        log.info(
            "dropped %d running-statistics GroupNorm buffers (%d norm layers): the authors ran "
            "inference in train mode, i.e. with ordinary GroupNorm",
            len(dropped),
            len({k.rpartition(".")[0] for k in dropped}),
        )
    return new


# --------------------------------------------------------------------------- files


def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a released ``.pth`` file, read with ``weights_only=True`` (memory-mapped).

    Raises :class:`InputError` for a missing, unreadable or non-weights file.
    """
    ckpt = read_torch_file(path, mmap=True)
    if not isinstance(ckpt, dict):
        raise InputError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def detect_kind(ckpt: Mapping[str, Any], path: str | os.PathLike | None = None) -> OfficialKind:
    """Which released file ``ckpt`` is, from its keys and the U-Net's input width."""
    _refuse_realdeal(ckpt, path)
    model, unet = ckpt.get("model"), ckpt.get("diffusion")
    if isinstance(model, Mapping) and _AE_KEY in _strip_prefix(model, path, strict=False):
        return "autoencoder"
    if isinstance(unet, Mapping):
        state = _strip_prefix(unet, path, strict=False)
        if _UNET_KEY not in state:
            raise InputError(path, f"its 'diffusion' state dict has no {_UNET_KEY!r}")
        cin = int(state[_UNET_KEY].shape[1])
        for kind, n in _UNET_IN_CHANNELS.items():
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


def import_autoencoder(
    src: str | os.PathLike, out: str | os.PathLike, ckpt: Mapping[str, Any] | None = None
) -> Path:
    """Convert ``autoencoder_checkpoint.pth`` into a realdeal autoencoder checkpoint ``out``."""
    from realdeal.runtime.checkpoint import save_checkpoint

    ckpt = read_official(src) if ckpt is None else ckpt
    if not isinstance(ckpt.get("model"), Mapping):
        raise InputError(src, "has no 'model' state dict (not the released autoencoder)")
    cfg, state = convert_autoencoder_state(ckpt["model"], src)
    model_config = to_dict(cfg)
    return save_checkpoint(
        out,
        {
            "kind": "autoencoder",
            "preset": PRESET,
            "step": 0,
            "config": json.dumps({"preset": PRESET, "model": model_config}),
            "model_config": json.dumps(model_config),
            "model": state,
            "ema": state,
            "extra": {
                "image_shape": list(OFFICIAL_IMAGE_SHAPE),
                "dataset": "",
                "imported_from": _provenance(src, ckpt, "tot_loss"),
            },
        },
    )


def _autoencoder_entry(path: str | os.PathLike) -> dict[str, Any]:
    """``extra.autoencoder`` of an LDM checkpoint from a released or a realdeal autoencoder file."""
    from realdeal.pipelines.autoencoder import checkpoint_fingerprint
    from realdeal.runtime.checkpoint import FORMAT, load_checkpoint

    ckpt = read_official(path)
    if ckpt.get("format") == FORMAT:
        ckpt = load_checkpoint(path, kind="autoencoder")
        model_config, state, preset = ckpt["model_config"], ckpt["ema"], ckpt.get("preset", "")
    else:
        if detect_kind(ckpt, path) != "autoencoder":
            raise InputError(path, "is not the released autoencoder (--autoencoder)")
        cfg, state = convert_autoencoder_state(ckpt["model"], path)
        model_config, preset = json.dumps(to_dict(cfg)), PRESET
    return {
        "model_config": model_config,
        "preset": preset,
        "ema": state,
        "fingerprint": checkpoint_fingerprint(path),
    }


def import_ldm(
    src: str | os.PathLike,
    autoencoder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int] = OFFICIAL_IMAGE_SHAPE,
    latent_ranges: tuple[tuple[float, float], ...] = OFFICIAL_RANGES,
    data: str | os.PathLike | None = None,
    norm_num_groups: int | None = None,
    ckpt: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``checkpoint750.pth`` (+ its autoencoder) into a realdeal LDM checkpoint ``out``.

    ``autoencoder``: ``autoencoder_checkpoint.pth`` or its realdeal import (the LDM checkpoint
    carries its decoder). ``image_shape``: the grid samples are decoded to (X, Y, Z), each
    divisible by 4 × the U-Net's size multiple. ``latent_ranges``: per-channel [lo, hi] of
    the latent scaling (the official hard-coded ranges). ``data``: a prepared dataset on
    that grid, recorded as the default geometry for ``realdeal sample``.
    """
    from realdeal.diffusion.schedule import ScheduleConfig
    from realdeal.presets import LDMRunConfig

    ckpt = read_official(src) if ckpt is None else ckpt
    unet_state = _unet_state(ckpt, src)
    cfg = infer_unet_config(unet_state, norm_num_groups, src)
    state = convert_unet_state(unet_state, cfg, src)
    ae = _autoencoder_entry(autoencoder)
    latent_channels = json.loads(ae["model_config"])["latent_channels"]
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
    run = LDMRunConfig(
        preset=PRESET,
        unet=cfg,
        schedule=ScheduleConfig(
            schedule="scaled_linear_beta",
            beta_start=0.0015,
            beta_end=0.0205,
            prediction_type="v_prediction",
        ),
    )
    return _save_unet(
        out,
        "ldm",
        run,
        state,
        {
            "latent_scaling": scaler.to_dict(),
            "latent_shape": [latent_channels, *(s // 4 for s in image_shape)],
            "image_shape": list(image_shape),
            "dataset": str(dataset.root) if dataset else "",
            "autoencoder": ae,
            "imported_from": _provenance(src, ckpt, "best_loss"),
        },
    )


def import_refiner(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    window: int = OFFICIAL_WINDOW,
    spacing: tuple[float, float, float] = OFFICIAL_SPACING,
    data: str | os.PathLike | None = None,
    norm_num_groups: int | None = None,
    ckpt: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``checkpoint2690.pth`` into a realdeal refiner checkpoint ``out``.

    ``window``: patch side in voxels (64); ``spacing``: voxel size (mm) inputs must have.
    ``data``: a prepared dataset whose intensity scaler and spacing are stored, so that
    ``realdeal refine`` also accepts raw-intensity inputs.
    """
    from realdeal.diffusion.schedule import ScheduleConfig
    from realdeal.training.refiner import RefinerRunConfig

    ckpt = read_official(src) if ckpt is None else ckpt
    unet_state = _unet_state(ckpt, src)
    cfg = infer_unet_config(unet_state, norm_num_groups, src)
    state = convert_unet_state(unet_state, cfg, src)
    dataset = _check_dataset(data, None)
    try:
        run = RefinerRunConfig(
            preset=PRESET,
            window=window,
            unet=cfg,
            schedule=ScheduleConfig(
                schedule="scaled_linear_beta",
                beta_start=0.0015,
                beta_end=0.0205,
                prediction_type="epsilon",
            ),
        )
    except ConfigError as e:
        raise InputError(src, f"not usable as a refiner ({e})") from e
    extra: dict[str, Any] = {
        "window": window,
        "image_shape": list(dataset.shape if dataset else OFFICIAL_IMAGE_SHAPE),
        "spacing": [float(v) for v in (dataset.spacing if dataset else spacing)],
        "dataset": str(dataset.root) if dataset else "",
        "imported_from": _provenance(src, ckpt, "best_loss"),
    }
    if dataset:
        extra["scaler"] = dataset.scaler.to_dict()
    return _save_unet(out, "refiner", run, state, extra)


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
    """
    ckpt = read_official(src)
    _refuse_realdeal(ckpt, src)
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
    "ldm": {"image_shape", "latent_ranges", "data", "norm_num_groups"},
    "refiner": {"window", "spacing", "data", "norm_num_groups"},
}


# --------------------------------------------------------------------------- helpers


def _strip_prefix(
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


def _refuse_realdeal(ckpt: Mapping[str, Any], path: str | os.PathLike | None) -> None:
    from realdeal.runtime.checkpoint import FORMAT

    if ckpt.get("format") == FORMAT:
        raise InputError(
            path, f"is already a realdeal {ckpt.get('kind')} checkpoint; use it as it is"
        )


def _meta_state(build: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """State dict (shapes only) of the module ``build`` makes, built on the meta device."""
    with torch.device("meta"):
        return build().state_dict()


def _check_exact(
    ref: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str | os.PathLike | None,
    what: str,
) -> None:
    missing = [k for k in ref if k not in state]
    extra = [k for k in state if k not in ref]
    if missing or extra:
        problem = f"lacks {missing[0]!r}" if missing else f"has unexpected {extra[0]!r}"
        raise InputError(where, f"{what} weights do not fit the released layout ({problem})")
    for k, v in ref.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InputError(
                where,
                f"{what} weight {k!r} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}",
            )


def _unet_state(ckpt: Mapping[str, Any], where: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    unet = ckpt.get("diffusion")
    if not isinstance(unet, Mapping):
        raise InputError(where, "has no 'diffusion' state dict (not a released LDM or refiner)")
    return unet


def _check_dataset(
    data: str | os.PathLike | None, image_shape: tuple[int, ...] | None
) -> PreparedDataset | None:
    """The prepared dataset ``data`` (``None`` if not given), checked against ``image_shape``."""
    if data is None:
        return None
    from realdeal.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    if image_shape is not None and tuple(ds.shape) != tuple(image_shape):
        raise InputError(
            ds.root, f"has grid {tuple(ds.shape)}, the model generates {tuple(image_shape)}"
        )
    return ds


def _provenance(src: str | os.PathLike, ckpt: Mapping[str, Any], loss_key: str) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            return v.item()
        return v if isinstance(v, (int, float, str)) or v is None else str(v)

    return {
        "file": Path(src).name,
        "epoch": plain(ckpt.get("epoch")),
        loss_key: plain(ckpt.get(loss_key)),
    }


def _save_unet(
    out: str | os.PathLike,
    kind: str,
    run: Any,
    state: dict[str, torch.Tensor],
    extra: dict[str, Any],
) -> Path:
    from realdeal.runtime.checkpoint import save_checkpoint

    return save_checkpoint(
        out,
        {
            "kind": kind,
            "preset": PRESET,
            "step": 0,
            "config": json.dumps(to_dict(run)),
            "model_config": json.dumps(to_dict(run.unet)),
            "model": state,
            "ema": state,
            "extra": extra,
        },
    )
