"""Slice figures and training curves for reports (PNG).

Triplanar figures: rows are volumes, columns the three planes through a common point:
sagittal (fixed axis 0), coronal (fixed axis 1) and axial (fixed axis 2), displayed in
neurological convention (subject's right on the right) with anterior/superior up. All
volumes in a figure share one grey-level window so that intensity differences are visible,
not normalised away. An optional :class:`Zoom` adds a fourth column: a box of one plane,
outlined on the full view and shown enlarged.

Volumes are ``(X, Y, Z)`` arrays in RAS voxel order (see :mod:`realdeal.data.io`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from scipy import ndimage

from realdeal.data.io import load_volume
from realdeal.errors import ConfigError, InputError
from realdeal.utils.fs import atomic_path

PLANES = ("sagittal", "coronal", "axial")
ZOOM_COLOUR = "#ffb000"


@dataclasses.dataclass(frozen=True)
class Zoom:
    """An enlarged inset of one plane: a box around voxel ``centre`` (``(x, y, z)``).

    The box spans ``1 / factor`` of the plane's height and width, so the inset panel (as
    large as the full view) shows it ``factor`` times enlarged.
    """

    centre: tuple[int, int, int]
    plane: str = "axial"
    factor: float = 3.0

    def __post_init__(self) -> None:
        if self.plane not in PLANES:
            raise ConfigError(f"zoom plane must be one of {PLANES}, not {self.plane!r}")
        if self.factor < 1:
            raise ConfigError(f"zoom factor must be >= 1, got {self.factor}")


def _slices(vol: np.ndarray, point: Sequence[int]) -> list[np.ndarray]:
    """The three orthogonal slices through ``point``, oriented for display (rows = up)."""
    x, y, z = (int(p) for p in point)
    sag = vol[x, :, :].T[::-1]  # (Z, Y): superior up, anterior right
    cor = vol[:, y, :].T[::-1]  # (Z, X): superior up, subject's right on the right
    axi = vol[:, :, z].T[::-1]  # (Y, X): anterior up
    return [sag, cor, axi]


def _display_index(shape: Sequence[int], voxel: Sequence[int], plane: int) -> tuple[int, int]:
    """(row, column) of ``voxel`` in the displayed slice of ``plane`` (as :func:`_slices`)."""
    x, y, z = (int(v) for v in voxel)
    if plane == 0:
        return shape[2] - 1 - z, y
    if plane == 1:
        return shape[2] - 1 - z, x
    return shape[1] - 1 - y, x


def _zoom_box(img_shape: tuple[int, int], centre: tuple[int, int], factor: float):
    """``(row0, row1, col0, col1)`` of a ``1/factor``-sized box around ``centre``, kept inside."""
    box = []
    for n, c in zip(img_shape, centre, strict=True):
        size = max(2, min(n, math.ceil(n / factor)))
        start = int(np.clip(c - size // 2, 0, n - size))
        box += [start, start + size]
    return tuple(box)


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


def cortical_point(
    mask: np.ndarray,
    point: Sequence[int],
    plane: str = "axial",
    cortex: np.ndarray | None = None,
    factor: float = 3.0,
) -> tuple[int, int, int]:
    """A voxel to centre a zoom box on: the brain's edge, upper right in the ``plane`` view.

    In the slice of ``plane`` through ``point``, take the ``cortex`` voxels (boolean volume,
    e.g. FreeSurfer labels 3/42) if there are any, else the boundary of ``mask``; pick the one
    farthest towards the upper right of the displayed slice, and move it inwards by a quarter
    of the zoom box so that the box holds cortex and the tissue beneath it. Falls back to
    ``point`` for an empty slice.
    """
    a = PLANES.index(plane)
    sl: list[slice | int] = [slice(None)] * 3
    sl[a] = int(point[a])
    m2 = np.asarray(mask, bool)[tuple(sl)]
    region = None if cortex is None else np.asarray(cortex, bool)[tuple(sl)] & m2
    if region is None or not region.any():
        region = m2 & ~ndimage.binary_erosion(m2)
    idx = np.argwhere(region)
    if idx.size == 0:
        return tuple(int(p) for p in point)  # type: ignore[return-value]
    # Display of the two remaining axes (u, v) (see _slices): up = +v (Z or Y), right = +u.
    score = idx[:, 0] + idx[:, 1]
    u, v = (float(c) for c in idx[int(np.argmax(score))])
    cu, cv = (float(point[i]) for i in range(3) if i != a)
    dims = [mask.shape[i] for i in range(3) if i != a]
    step = np.array([cu - u, cv - v])
    norm = float(np.hypot(*step))
    if norm > 0:
        inward = min(norm, 0.25 * min(dims) / factor)
        u, v = u + step[0] / norm * inward, v + step[1] / norm * inward
    out = [int(p) for p in point]
    rest = [i for i in range(3) if i != a]
    out[rest[0]], out[rest[1]] = int(round(u)), int(round(v))
    return tuple(out)  # type: ignore[return-value]


def _clear_axis(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    fig.patch.set_facecolor("white")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _check_volumes(volumes: Sequence[np.ndarray], titles: Sequence[str] | None, what: str):
    if not volumes:
        raise ConfigError(f"{what} needs at least one volume")
    shape = volumes[0].shape
    for v in volumes:
        if v.ndim != 3 or v.shape != shape:
            raise ConfigError(
                f"all volumes must be 3D of one shape; got {[a.shape for a in volumes]}"
            )
    if titles is not None and len(titles) != len(volumes):
        raise ConfigError("one title per volume")
    return shape


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
    zoom: Zoom | None = None,
) -> Path:
    """Write a PNG with one row per volume and the three planes as columns.

    ``volumes`` are ``(X, Y, Z)`` arrays of one shape; ``point`` is the voxel the planes pass
    through (default: centre of mass of the first volume's foreground); ``window`` the grey-level
    range shared by all rows (default: 0.5–99.5th percentile of the first volume's foreground),
    or ``"row"`` for each row's own percentile window;
    ``spacing`` sets the aspect ratio for anisotropic voxels. ``zoom`` adds a fourth column
    with an enlarged box of one plane; the box is outlined on that plane in every row.
    """
    shape = _check_volumes(volumes, titles, "triplanar_png")
    ref = np.asarray(volumes[0], dtype=np.float32)
    point = centre_point(ref) if point is None else point
    windows = (
        [_auto_window(np.asarray(v, np.float32)) for v in volumes]
        if window == "row"
        else [_auto_window(ref) if window is None else window] * len(volumes)
    )
    zplane = None if zoom is None else PLANES.index(zoom.plane)
    layout = _TriplanarLayout.of(shape, spacing, zplane, len(volumes), bool(suptitle))
    fig, axes = plt.subplots(
        len(volumes),
        len(layout.widths),
        figsize=(layout.fig_w, layout.fig_h),
        squeeze=False,
        gridspec_kw={"width_ratios": layout.widths, "wspace": 0.02, "hspace": 0.1},
    )
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.01, top=1.0 - (layout.title_h + 0.25) / layout.fig_h
    )
    for r, vol in enumerate(volumes):
        planes = _slices(np.asarray(vol, np.float32), point)
        box = None
        if zoom is not None and zplane is not None:
            centre = _display_index(shape, zoom.centre, zplane)
            box = _zoom_box(planes[zplane].shape, centre, zoom.factor)
            r0, r1, c0, c1 = box
            planes.append(planes[zplane][r0:r1, c0:c1])
        for c, (img, aspect) in enumerate(zip(planes, layout.aspects, strict=True)):
            ax = axes[r][c]
            ax.imshow(
                img,
                cmap=cmap,
                vmin=windows[r][0],
                vmax=windows[r][1],
                aspect=aspect,
                interpolation="nearest",
            )
            _clear_axis(ax)
            _mark_zoom(ax, c, zplane, box)
            if r == 0:
                label = PLANES[c] if c < 3 else f"{PLANES[zplane]} ×{zoom.factor:g}"
                ax.set_title(label, fontsize=9)
            if c == 0 and titles is not None:
                ax.set_ylabel(titles[r], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1.0 - 0.1 / layout.fig_h)
    return _save(fig, path, dpi)


@dataclasses.dataclass(frozen=True)
class _TriplanarLayout:
    """Panel aspects and widths (inches, by voxel size) and the figure size of a triplanar
    figure: three planes, plus the zoomed plane's inset when there is one."""

    aspects: list[float]
    widths: list[float]
    fig_w: float
    fig_h: float
    title_h: float

    @classmethod
    def of(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float],
        zplane: int | None,
        rows: int,
        has_title: bool,
    ) -> _TriplanarLayout:
        sx, sy, sz = spacing
        aspects = [sz / sy, sz / sx, sy / sx]
        widths = [shape[1] * sy, shape[0] * sx, shape[0] * sx]
        if zplane is not None:
            aspects.append(aspects[zplane])
            widths.append(widths[zplane])
        fig_w = 7.8 * sum(widths) / sum(widths[:3])
        # Axes span 96 % of the width (subplots_adjust below), less the gaps between panels.
        row_h = 0.96 * fig_w / 1.04 * max(shape[2] * sz, shape[1] * sy) / sum(widths)
        title_h = 0.35 if has_title else 0.0
        fig_h = rows * row_h * 1.12 + title_h + 0.3
        return cls(aspects, widths, fig_w, fig_h, title_h)


def _mark_zoom(ax, column: int, zplane: int | None, box: tuple[int, ...] | None) -> None:
    """Outline the zoom box on the zoomed plane's panel; frame the inset (column 3)."""
    if column == zplane and box is not None:
        r0, r1, c0, c1 = box
        ax.add_patch(
            Rectangle(
                (c0 - 0.5, r0 - 0.5),
                c1 - c0,
                r1 - r0,
                fill=False,
                edgecolor=ZOOM_COLOUR,
                linewidth=1.0,
            )
        )
    if column == 3:
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(ZOOM_COLOUR)
            spine.set_linewidth(1.5)


def gallery_png(
    volumes: Sequence[np.ndarray],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ncols: int = 8,
    dpi: int = 100,
) -> Path:
    """Many volumes at a glance: one tile per volume and plane, through each volume's centre.

    ``volumes`` are ``(X, Y, Z)`` arrays of one shape (e.g. all LDM samples); each volume gets
    its own grey-level window (anatomy, not contrast, is what a gallery compares). One block of
    rows per plane, ``ncols`` volumes per row.
    """
    shape = _check_volumes(volumes, titles, "gallery_png")
    windows = [_auto_window(np.asarray(v, np.float32)) for v in volumes]
    idx = [PLANES.index(p) for p in planes]
    sx, sy, sz = spacing
    aspects, sizes = (
        [sz / sy, sz / sx, sy / sx],
        [
            (shape[2] * sz, shape[1] * sy),
            (shape[2] * sz, shape[0] * sx),
            (shape[1] * sy, shape[0] * sx),
        ],
    )
    ncols = max(1, min(ncols, len(volumes)))
    nrows_per = math.ceil(len(volumes) / ncols)
    tile_w = 1.3
    heights = [sizes[i][0] / sizes[i][1] * tile_w for i in idx for _ in range(nrows_per)]
    fig, axes = plt.subplots(
        len(heights),
        ncols,
        figsize=(ncols * tile_w, sum(heights) * 1.15 + 0.2),
        squeeze=False,
        gridspec_kw={"height_ratios": heights, "wspace": 0.03, "hspace": 0.15},
    )
    for block, plane in enumerate(idx):
        for k, vol in enumerate(volumes):
            v = np.asarray(vol, np.float32)
            img = _slices(v, centre_point(v))[plane]
            ax = axes[block * nrows_per + k // ncols][k % ncols]
            lo, hi = windows[k]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspects[plane])
            if titles is not None and block == 0:
                ax.set_title(titles[k], fontsize=7)
            if k % ncols == 0:
                ax.set_ylabel(PLANES[plane], fontsize=7)
        for ax in axes.ravel():
            _clear_axis(ax)
    return _save(fig, path, dpi)


def plane_png(
    volumes: Sequence[np.ndarray],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    plane: str = "axial",
    point: Sequence[int] | None = None,
    window: tuple[float, float] | None = None,
    cmap: str = "gray",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    colorbar: str | None = None,
    suptitle: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write a PNG with one slice of ``plane`` per volume, side by side, in one shared window.

    ``volumes`` are ``(X, Y, Z)`` arrays of one shape; ``point`` the voxel the plane passes
    through (default: the first volume's foreground centre); ``window`` the shared colour range
    (default: the first volume's percentile window); ``colorbar`` labels a shared colour bar.
    """
    shape = _check_volumes(volumes, titles, "plane_png")
    if plane not in PLANES:
        raise ConfigError(f"plane must be one of {PLANES}, not {plane!r}")
    a = PLANES.index(plane)
    ref = np.asarray(volumes[0], dtype=np.float32)
    point = centre_point(ref) if point is None else point
    lo, hi = _auto_window(ref) if window is None else window
    sx, sy, sz = spacing
    aspect = [sz / sy, sz / sx, sy / sx][a]
    rows, cols = [(shape[2], shape[1]), (shape[2], shape[0]), (shape[1], shape[0])][a]
    panel_w = 2.6
    panel_h = panel_w * rows * aspect / cols
    n = len(volumes)
    fig, axes = plt.subplots(
        1,
        n,
        figsize=(panel_w * n + (0.8 if colorbar else 0.0), panel_h + 0.6),
        squeeze=False,
        gridspec_kw={"wspace": 0.03},
    )
    im = None
    for i, vol in enumerate(volumes):
        ax = axes[0][i]
        img = _slices(np.asarray(vol, np.float32), point)[a]
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        _clear_axis(ax)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if colorbar and im is not None:
        cb = fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02)
        cb.set_label(colorbar, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path, dpi)


def training_curves_png(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    dpi: int = 110,
) -> Path:
    """Write a PNG with one panel per model: loss against step, log-scaled loss axis.

    ``curves[name] = (steps, losses)``. Panels whose losses are not all positive fall back to
    a linear axis (a log axis cannot show them).
    """
    if not curves:
        raise ConfigError("training_curves_png needs at least one curve")
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.9), squeeze=False)
    for ax, (name, (steps, losses)) in zip(axes[0], curves.items(), strict=True):
        s = np.asarray(steps, dtype=np.float64)
        v = np.asarray(losses, dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(v)
        s, v = s[ok], v[ok]
        ax.plot(s, v, lw=1.0, color="#1f77b4", marker="." if len(s) < 30 else None)
        if len(v) and (v > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.set_ylabel("loss", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="both", alpha=0.3, lw=0.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


def cohort_figure(folder: str | os.PathLike, n: int = 4) -> Path:
    """Triplanar PNG (``cohort.png``) of the first ``n`` subjects of a cohort folder."""
    folder = Path(folder)
    files = sorted(folder.glob("sub-*_T1w.nii.gz"))[:n]
    if not files:
        raise InputError(folder, "no sub-*_T1w.nii.gz files; not a realdeal cohort")
    vols = [load_volume(f) for f in files]
    shape = vols[0].shape
    vols = [v for v in vols if v.shape == shape]
    return triplanar_png(
        [v.data for v in vols],
        folder / "cohort.png",
        titles=[f.name.replace("_T1w.nii.gz", "") for f in files[: len(vols)]],
        window="row",
        spacing=vols[0].spacing,
        suptitle=f"realdeal built-in cohort ({folder.name})",
    )
