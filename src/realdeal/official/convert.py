"""Mapping the released state dicts onto realdeal's networks, strictly (every key accounted for).

The released U-Nets are MONAI Generative 0.2.x ``DiffusionModelUNet`` state dicts; they
become MONAI 1.x ``DiffusionModelUNet`` state dicts of a U-Net built with
``include_fc=False`` (see :func:`convert_unet_state`), which computes what the released
network computes. The released autoencoder is
:class:`realdeal.models.official_autoencoder.OfficialAutoencoder`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from realdeal.errors import ConfigError, InputError
from realdeal.models.official_autoencoder import OfficialAutoencoder, OfficialAutoencoderConfig
from realdeal.models.unet import UNetConfig, build_unet
from realdeal.official.files import (
    AE_KEY,
    GROUPNORM_BUFFERS,
    OFFICIAL_NORM_GROUPS,
    UNET_KEY,
    strip_prefix,
)

if TYPE_CHECKING:
    from realdeal.models.unet import UNetConfig

log = logging.getLogger(__name__)


def convert_autoencoder_state(
    state: Mapping[str, torch.Tensor], where: str | os.PathLike | None = None
) -> tuple[OfficialAutoencoderConfig, dict[str, torch.Tensor]]:
    """(config, state dict) of :class:`OfficialAutoencoder` from the released ``model`` dict.

    Widths are read from the weights (``in_conv``, ``echan_conv1``, ``echan_conv2``), so the
    released size and smaller test networks both load; the state must fit exactly.
    """
    state = strip_prefix(state, where)
    missing = [k for k in (AE_KEY, "echan_conv1.weight", "echan_conv2.weight") if k not in state]
    if missing:
        raise InputError(where, f"autoencoder weights lack {missing[0]!r}")
    base, cin = state[AE_KEY].shape[:2]
    cfg = OfficialAutoencoderConfig(
        in_channels=int(cin),
        base_channels=int(base),
        bottleneck=int(state["echan_conv1.weight"].shape[0]),
        latent_channels=int(state["echan_conv2.weight"].shape[0]),
    )
    check_exact(meta_state(lambda: OfficialAutoencoder(cfg)), state, where, "autoencoder")
    return cfg, dict(state)


def infer_unet_config(
    state: Mapping[str, torch.Tensor],
    norm_num_groups: int | None = None,
    where: str | os.PathLike | None = None,
    num_head_channels: int | Sequence[int] | None = None,
) -> UNetConfig:
    """The :class:`~realdeal.models.unet.UNetConfig` of an old-layout U-Net state dict.

    Widths, levels, residual blocks per level and attention levels come from the weights;
    ``include_fc`` is ``False`` (see :func:`convert_unet_state`). The number of attention
    heads does not show in the weights: by default one head per attending level (head
    channels = the level's width), as in both released configs (LDM 0/512/768, refiner
    0/0/256); ``num_head_channels`` states the value the network was built with in MONAI
    Generative instead (see :func:`head_channels`). ``norm_num_groups``: from the
    GroupNorm-variant buffers when present, else MONAI Generative's default 32, unless given.
    """

    state = strip_prefix(state, where)
    if UNET_KEY not in state:
        raise InputError(where, f"U-Net weights lack {UNET_KEY!r}")
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
    heads = head_channels(channels, attention, num_head_channels)
    try:
        return UNetConfig(
            in_channels=int(state[UNET_KEY].shape[1]),
            out_channels=out_channels,
            channels=channels,
            num_res_blocks=len(res_blocks),
            attention_levels=attention,
            num_head_channels=heads,
            norm_num_groups=norm_num_groups,
            include_fc=False,
        )
    except ConfigError as e:
        raise InputError(where, f"U-Net weights give an unusable architecture ({e})") from e


def head_channels(
    channels: Sequence[int],
    attention: Sequence[bool],
    generative: int | Sequence[int] | None = None,
) -> tuple[int, ...]:
    """MONAI 1.x ``num_head_channels`` computing what MONAI Generative 0.2.x computes.

    ``generative``: the ``num_head_channels`` the network was built with (one value for all
    levels, or one per level); ``None``: one head per attending level. MONAI Generative splits
    a level of ``C`` channels into ``C // h`` heads of ``C / (C // h)`` channels each (it does
    not require ``h`` to divide ``C``), the same split as MONAI 1.x with that head width, so
    several heads convert exactly. Levels without attention get 0, except the last, whose value
    the middle block's attention uses. A value MONAI Generative cannot build or run (no head,
    or ``C`` not divisible into ``C // h`` heads) is a :class:`ConfigError`.
    """
    n = len(channels)
    if generative is None:
        given = tuple(channels)
    elif isinstance(generative, int):
        given = (generative,) * n
    else:
        given = tuple(int(h) for h in generative)
        if len(given) != n:
            raise ConfigError(
                f"head channels {list(given)}: need one value, or one per level ({n})"
            )
    out = []
    for i, (c, h) in enumerate(zip(channels, given, strict=True)):
        if not (attention[i] or i == n - 1):
            out.append(0)
            continue
        heads = c // h if h > 0 else 0
        problem = "no head" if heads < 1 else f"{c} not divisible into {heads} heads"
        if heads < 1 or c % heads:
            raise ConfigError(
                f"head channels {h} at level {i} ({c} channels): MONAI Generative cannot build "
                f"that attention ({problem})"
            )
        out.append(c // heads)
    return tuple(out)


def old_unet_key(new_key: str) -> str:
    """The MONAI Generative 0.2.x name of a MONAI 1.x ``DiffusionModelUNet`` state key.

    The inverse of what ``DiffusionModelUNet.load_old_state_dict`` renames: self-attention
    ``X.attn.to_{q,k,v}`` ← ``X.to_{q,k,v}``, ``X.attn.out_proj`` ← ``X.proj_attn``, and the
    upsampler's ``postconv`` ← ``conv``. (A U-Net converted by :func:`convert_unet_state`
    has no ``attn.out_proj``: the ``proj_attn`` weights are not applied by MONAI Generative.)
    """
    for name in ("to_q", "to_k", "to_v"):
        new_key = new_key.replace(f".attn.{name}.", f".{name}.")
    return new_key.replace(".attn.out_proj.", ".proj_attn.").replace("postconv", "conv")


def convert_unet_state(
    old_state: Mapping[str, torch.Tensor], cfg: UNetConfig, where: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """MONAI 1.x state dict of the U-Net ``cfg`` from an old-layout (``module.``) state dict.

    Strict: every parameter of the new model must be found with its shape, and every old key
    is used, except two kinds of keys, which are checked and dropped:

    * ``X.proj_attn.weight``/``.bias`` of every self-attention: MONAI Generative 0.2.x's
      ``AttentionBlock`` creates this projection but never applies it, so the released weights
      never touched an output. They must be present with their shapes (``C×C``, ``C``), as
      the layout has them; ``cfg.include_fc`` must be ``False`` (a U-Net that applies a
      projection there computes something else, and ``True`` is refused).
    * the GroupNorm-variant buffers of norm layers (see :mod:`realdeal.official`).

    Tensors are not copied.
    """

    if cfg.include_fc:
        raise ConfigError(
            "released U-Nets convert to include_fc=False: MONAI Generative 0.2.x never applies "
            "the attention output projection (proj_attn)"
        )
    old = strip_prefix(old_state, where)
    with torch.device("meta"):
        model = build_unet(cfg)
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    new: dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        src = old_unet_key(key)
        if src not in old:
            raise InputError(where, f"U-Net weights lack {src!r} (for {key!r})")
        _check_shape(old, src, tuple(ref.shape), where)
        new[key] = old[src]
    used = {old_unet_key(k) for k in new}
    unapplied = []
    for key in new:  # one per attention block: its never-applied projection
        if key.endswith(".attn.to_q.weight"):
            block = old_unet_key(key).removesuffix(".to_q.weight")
            width = int(new[key].shape[0])
            for leaf, shape in (("weight", (width, width)), ("bias", (width,))):
                src = f"{block}.proj_attn.{leaf}"
                if src not in old:
                    raise InputError(where, f"U-Net weights lack {src!r}")
                _check_shape(old, src, shape, where)
                unapplied.append(src)
    used.update(unapplied)
    dropped = []
    for key in old:
        if key in used:
            continue
        prefix, _, leaf = key.rpartition(".")
        if leaf in GROUPNORM_BUFFERS and prefix in norms:
            dropped.append(key)
            continue
        raise InputError(where, f"unexpected U-Net weight {key!r} for architecture {cfg}")
    if unapplied:
        log.info(
            "dropped the proj_attn weights of %d attention blocks: MONAI Generative 0.2.x never "
            "applies them",
            len(unapplied) // 2,
        )
    if dropped:
        log.info(
            "dropped %d running-statistics GroupNorm buffers (%d norm layers): the authors ran "
            "inference in train mode, i.e. with ordinary GroupNorm",
            len(dropped),
            len({k.rpartition(".")[0] for k in dropped}),
        )
    return new


def _check_shape(
    old: Mapping[str, torch.Tensor],
    key: str,
    shape: tuple[int, ...],
    where: str | os.PathLike | None,
) -> None:
    if tuple(old[key].shape) != shape:
        raise InputError(
            where,
            f"U-Net weight {key!r} has shape {tuple(old[key].shape)}, the architecture "
            f"needs {shape}",
        )


def meta_state(build: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """State dict (shapes only) of the module ``build`` makes, built on the meta device."""
    with torch.device("meta"):
        return build().state_dict()


def check_exact(
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
