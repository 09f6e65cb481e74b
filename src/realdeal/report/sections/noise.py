"""Section "Noise maps": image − NLM-denoised image of one held-out subject, computed by the
noise-KL metric itself (:func:`realdeal.metrics.noise.noise_maps`); this module only chooses
the subject, slice and grey-level window and writes the figure."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from realdeal.errors import RealDealError
from realdeal.metrics import tables as T
from realdeal.metrics.noise import NoiseConfig, ants_available, noise_maps, noise_region
from realdeal.report.cells import as_float, fmt_value
from realdeal.report.document import Block, Figure, Note
from realdeal.report.figures import centre_point, plane_png
from realdeal.report.sections.context import Context, Skipped, load_candidates, paired_inputs


def _noise_config(ctx: Context):
    """The noise metric's settings as the paired evaluation used them (default otherwise)."""
    try:
        paired = ctx.evaluation("paired")["config"].get("paired")
    except Skipped:
        paired = None
    d = paired.get("noise") if isinstance(paired, dict) else None
    note = None
    try:
        cfg = NoiseConfig(**d) if isinstance(d, dict) else NoiseConfig()
    except (TypeError, RealDealError):
        cfg, note = NoiseConfig(), "evaluation's noise settings unreadable; defaults used"
    if cfg.backend == "ants" and not ants_available():
        cfg = dataclasses.replace(cfg, backend="dipy")
        note = "the evaluation used ANTs (antspyx), not installed here: maps use dipy's NLM"
    return cfg, note


def noise_section(ctx: Context) -> list[Block]:
    ds, sets, _, subjects = paired_inputs(ctx)
    sid = next(
        (s for s in subjects if any((f / f"{s}.nii.gz").is_file() for f in sets.values())), None
    )
    if sid is None:
        raise Skipped("no held-out subject has a candidate volume")
    original = ds.load_image(sid)
    labels = ds.load_label(sid)
    brain = labels.data > 0 if labels is not None else ds.load_mask(sid)
    point = centre_point(original.data)
    z = point[2]
    if not brain[:, :, z].any():
        raise Skipped(f"{sid}: no brain voxels in the axial slice through the centre")
    cfg, note = _noise_config(ctx)
    vols = {"original": original.data}
    vols.update((name, v.data) for name, v in load_candidates(sets, sid, original))
    lab = None if labels is None else labels.data
    threads = max(1, min(2, os.cpu_count() or 1))
    by_name = noise_maps(vols, brain, lab, cfg, threads)
    names, maps = list(by_name), list(by_name.values())
    shown = maps[0][:, :, z]
    w = float(np.percentile(np.abs(shown[shown != 0]), 99.5)) if (shown != 0).any() else 0.0
    w = w if w > 0 else float(max(np.abs(m).max() for m in maps)) or 1e-3
    path, src = ctx.figure(f"noise_{sid}")
    plane_png(
        maps,
        path,
        titles=names,
        plane="axial",
        point=point,
        window=(-w, w),
        cmap="RdBu_r",
        spacing=ds.spacing,
        colorbar="image − denoised",
        suptitle=f"{sid}: noise maps, axial slice {z}",
    )
    caption = _caption(sid, cfg, lab, w)
    kl = _subject_kl(ctx, sid)
    if kl:
        caption += f" This subject's KL (WM / ventricles): {kl}."
    blocks: list[Block] = [Figure(src, f"noise maps of {sid}", caption)]
    if note:
        blocks.append(Note(note))
    return blocks


def _caption(sid: str, cfg: NoiseConfig, labels: np.ndarray | None, w: float) -> str:
    """What the noise figure shows: denoiser, region and grey-level window ``±w``."""
    backend = (
        f"dipy non-local means (patch radius {cfg.patch_radius}, block radius "
        f"{cfg.block_radius}, σ estimated per image)"
        if cfg.backend == "dipy"
        else "ANTs adaptive non-local means (Rician)"
    )
    region = (
        f"the metric's region (white matter ∪ lateral ventricles, grown by {cfg.margin} voxels)"
        if noise_region(labels) is not None
        else "the brain mask (no label map: the metric's regions are unknown)"
    )
    return (
        f"{sid}: image − denoised image, denoised with {backend} around {region} exactly as "
        f"the noise-KL metric does; symmetric window ±{T.fmt(w)} (99.5th percentile of the "
        "original's |noise|), intensities on the prepared [-1, 1] scale."
    )


def _subject_kl(ctx: Context, sid: str) -> str:
    try:
        records = ctx.evaluation("paired")["records"]
    except Skipped:
        return ""
    vals: dict[str, dict[str, float]] = {}
    for r in records:
        if (
            isinstance(r, dict)
            and r.get("subject") == sid
            and r.get("metric", "").startswith("kl_")
        ):
            vals.setdefault(r["set"], {})[r["metric"]] = as_float(r.get("value"))
    return "; ".join(
        f"{s} {fmt_value(v.get('kl_white_matter'))} / {fmt_value(v.get('kl_lateral_ventricles'))}"
        for s, v in vals.items()
    )
