"""Triplanar slice figures of one or several volumes side by side (PNG).

Rows are volumes, columns the three planes through a common point: sagittal (fixed axis 0),
coronal (fixed axis 1) and axial (fixed axis 2), displayed in radiological-free neurological
convention with anterior/superior up. All volumes in a figure share one grey-level window so
that intensity differences are visible, not normalised away.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from realdeal.errors import ConfigError
from realdeal.utils.fs import atomic_path

PLANES = ("sagittal", "coronal", "axial")


def _slices(vol: np.ndarray, point: Sequence[int]) -> list[np.ndarray]:
    """The three orthogonal slices through ``point``, oriented for display (rows = up)."""
    x, y, z = (int(p) for p in point)
    sag = vol[x, :, :].T[::-1]  # (Z, Y): superior up, anterior right
    cor = vol[:, y, :].T[::-1]  # (Z, X): superior up, subject's right on the right
    axi = vol[:, :, z].T[::-1]  # (Y, X): anterior up
    return [sag, cor, axi]


def _auto_window(vol: np.ndarray) -> tuple[float, float]:
    """0.5–99.5th percentile of the foreground (voxels above the minimum), lower end at the minimum."""
    fg = vol[vol > vol.min()]
    lo, hi = np.percentile(fg if fg.size else vol, [0.5, 99.5])
    return float(min(lo, vol.min())), float(max(hi, lo + 1e-6))


def centre_point(vol: np.ndarray, background: float | None = None) -> tuple[int, int, int]:
    """Centre of mass of the non-background voxels (the volume centre if all background)."""
    bg = float(vol.min()) if background is None else background
    idx = np.argwhere(vol > bg)
    if idx.size == 0:
        return tuple(s // 2 for s in vol.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.round(idx.mean(0)))  # type: ignore[return-value]


def triplanar_png(
    volumes: Sequence[np.ndarray],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    point: Sequence[int] | None = None,
    window: tuple[float, float] | str | None = None,
    cmap: str = "gray",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    suptitle: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write a PNG with one row per volume and the three planes as columns.

    ``volumes`` are ``(X, Y, Z)`` arrays of one shape; ``point`` is the voxel the planes pass
    through (default: centre of mass of the first volume's foreground); ``window`` the grey-level
    range shared by all rows (default: 0.5–99.5th percentile of the first volume's foreground),
    or ``"row"`` for each row's own percentile window;
    ``spacing`` sets the aspect ratio for anisotropic voxels.
    """
    if not volumes:
        raise ConfigError("triplanar_png needs at least one volume")
    shape = volumes[0].shape
    for v in volumes:
        if v.ndim != 3 or v.shape != shape:
            raise ConfigError(
                f"all volumes must be 3D of one shape; got {[a.shape for a in volumes]}"
            )
    if titles is not None and len(titles) != len(volumes):
        raise ConfigError("one title per volume")
    ref = np.asarray(volumes[0], dtype=np.float32)
    point = centre_point(ref) if point is None else point
    windows = (
        [_auto_window(np.asarray(v, np.float32)) for v in volumes]
        if window == "row"
        else [_auto_window(ref) if window is None else window] * len(volumes)
    )
    sx, sy, sz = spacing
    aspects = [sz / sy, sz / sx, sy / sx]
    widths = [shape[1] * sy, shape[0] * sx, shape[0] * sx]
    fig_w = 7.8
    # Axes span 96 % of the width (subplots_adjust below), less the gaps between panels.
    row_h = 0.96 * fig_w / 1.04 * max(shape[2] * sz, shape[1] * sy) / sum(widths)
    title_h = 0.35 if suptitle else 0.0
    fig_h = len(volumes) * row_h * 1.12 + title_h + 0.3
    fig, axes = plt.subplots(
        len(volumes),
        3,
        figsize=(fig_w, fig_h),
        squeeze=False,
        gridspec_kw={"width_ratios": widths, "wspace": 0.02, "hspace": 0.1},
    )
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1.0 - (title_h + 0.25) / fig_h)
    for r, vol in enumerate(volumes):
        for c, (img, aspect) in enumerate(
            zip(_slices(np.asarray(vol, np.float32), point), aspects, strict=True)
        ):
            ax = axes[r][c]
            ax.imshow(
                img,
                cmap=cmap,
                vmin=windows[r][0],
                vmax=windows[r][1],
                aspect=aspect,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(PLANES[c], fontsize=9)
            if c == 0 and titles is not None:
                ax.set_ylabel(titles[r], fontsize=9)
    fig.patch.set_facecolor("white")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1.0 - 0.1 / fig_h)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
