"""Section "Held-out subjects": slice figures of up to three held-out subjects (original |
reconstruction | refined), with an enlarged cortical box."""

from __future__ import annotations

import numpy as np

from realdeal.data.io import load_volume
from realdeal.data.labels import LEFT_CORTEX, RIGHT_CORTEX
from realdeal.errors import RealDealError
from realdeal.report.document import Block, Figure, Note, Para
from realdeal.report.figures import Zoom, centre_point, cortical_point, triplanar_png
from realdeal.report.sections.context import (
    MAX_SUBJECTS,
    ZOOM_FACTOR,
    Context,
    Skipped,
    paired_inputs,
)


def subjects_section(ctx: Context) -> list[Block]:
    ds, sets, missing, subjects = paired_inputs(
        ctx, " (no held-out reconstructions or refinements)"
    )
    if not sets:
        raise Skipped("none of the paired candidate folders exists")
    blocks: list[Block] = [
        Para(
            ctx.refined_by()
            + "Held-out subjects in the prepared geometry, all rows in the original's grey-level "
            "window (0.5–99.5th percentile of its foreground). Planes through the brain centre; "
            f"the orange box on the axial view is shown {ZOOM_FACTOR:g}× enlarged in the right "
            "column."
        )
    ]
    blocks += [Note(f"Missing candidate set {m}.") for m in missing]
    shown = 0
    for sid in subjects:
        if shown == MAX_SUBJECTS:
            break
        try:
            original = ds.load_image(sid)
        except RealDealError as e:
            blocks.append(Note(f"Subject {sid} skipped: {e}"))
            continue
        names, vols, absent = ["original"], [original.data], []
        for name, folder in sets.items():
            path = folder / f"{sid}.nii.gz"
            if not path.is_file():
                absent.append(name)
                continue
            vol = load_volume(path)
            if vol.shape != original.shape:
                absent.append(f"{name} (shape {vol.shape} ≠ {original.shape})")
                continue
            names.append(name)
            vols.append(vol.data)
        labels = ds.load_label(sid)
        mask = labels.data > 0 if labels is not None else ds.load_mask(sid)
        cortex = None if labels is None else np.isin(labels.data, (LEFT_CORTEX, RIGHT_CORTEX))
        point = centre_point(original.data)
        zc = cortical_point(mask, point, "axial", cortex, ZOOM_FACTOR)
        path, src = ctx.figure(f"subject_{sid}")
        triplanar_png(
            vols,
            path,
            titles=names,
            point=point,
            spacing=ds.spacing,
            suptitle=sid,
            zoom=Zoom(zc, "axial", ZOOM_FACTOR),
        )
        caption = f"{sid}: {' | '.join(names)}."
        if absent:
            caption += f" Not available: {', '.join(absent)}."
        blocks.append(Figure(src, f"{sid}: {', '.join(names)}", caption))
        shown += 1
    if not shown:
        raise Skipped("no held-out subject could be shown")
    return blocks
