"""Section "LDM samples": a gallery of the first sample set and up to three samples next to
their refined versions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from realdeal.data.io import load_volume
from realdeal.report.document import Block, Figure, Note, Para
from realdeal.report.figures import Zoom, centre_point, cortical_point, gallery_png, triplanar_png
from realdeal.report.sections.context import (
    MAX_SAMPLES,
    ZOOM_FACTOR,
    Context,
    Skipped,
    candidate_sets,
    nifti_files,
)


def samples_section(ctx: Context) -> list[Block]:
    if not ctx.run.section("unpaired"):
        raise Skipped('run.json has no "unpaired" entry (no LDM samples)')
    sets, missing = candidate_sets(ctx, "unpaired")
    files = {name: nifti_files(folder) for name, folder in sets.items()}
    files = {n: f for n, f in files.items() if f}
    if not files:
        raise Skipped("no sample volumes found")
    from realdeal.report.sections.memorization import verdict

    blocks, nearest, train = verdict(ctx)
    first = next(iter(files))
    if len(files[first]) > 1:  # every sample of the first set at a glance
        names = sorted(files[first])
        vols = [load_volume(files[first][n]) for n in names]
        path, src = ctx.figure("samples_gallery")
        gallery_png([v.data for v in vols], path, titles=names, spacing=vols[0].spacing)
        blocks.append(
            Figure(src, "all samples", f"All {len(names)} volumes of set {first!r}, centre slices.")
        )
    shown = (ctx.run.section("unpaired") or {}).get("figure_sets")
    if shown:
        files = {n: f for n, f in files.items() if n in shown}
    common = sorted(set.intersection(*(set(f) for f in files.values())))
    blocks += [
        Para(
            ctx.refined_by()
            + f"LDM samples next to their refined versions ({' | '.join(files)})"
            + (", and the nearest training subject of each," if nearest else "")
            + f" one grey-level window per figure (the first row's); orange box enlarged "
            f"{ZOOM_FACTOR:g}×."
        )
    ]
    blocks += [Note(f"Missing sample set {m}.") for m in missing]
    if not common:
        blocks.append(Note("The sample sets share no file names; showing the first set only."))
        first = next(iter(files))
        files, common = {first: files[first]}, sorted(files[first])
    for name in common[:MAX_SAMPLES]:
        vols = [load_volume(files[s][name]) for s in files]
        if any(v.shape != vols[0].shape for v in vols):
            blocks.append(Note(f"Sample {name} skipped: the sets' volumes differ in shape."))
            continue
        titles, caption = list(files), f"{name}: {' | '.join(files)}"
        match = nearest.get(name)
        twin = train / f"{match['nearest']}.nii.gz" if match and train else None
        nearest_vol = load_volume(twin) if twin is not None and twin.is_file() else None
        if nearest_vol is not None and nearest_vol.shape == vols[0].shape:
            vols.append(nearest_vol)
            titles.append(f"nearest training {match['nearest']} ({match['similarity']:.3f})")
            caption += (
                f" | its nearest training subject, {match['nearest']} (similarity "
                f"{match['similarity']:.3f}{', a copy' if match.get('copy') else ''})"
            )
        data = [v.data for v in vols]
        mask = ndimage.binary_fill_holes(data[0] > data[0].min() + 0.05 * np.ptp(data[0]))
        point = centre_point(np.where(mask, data[0], data[0].min()))
        zc = cortical_point(mask, point, "axial", None, ZOOM_FACTOR)
        path, src = ctx.figure(f"sample_{name}")
        triplanar_png(
            data,
            path,
            titles=titles,
            point=point,
            spacing=vols[0].spacing,
            suptitle=name,
            zoom=Zoom(zc, "axial", ZOOM_FACTOR),
        )
        blocks.append(Figure(src, f"sample {name}", caption + "."))
    return blocks
