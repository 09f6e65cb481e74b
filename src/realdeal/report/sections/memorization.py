"""Section "Memorisation": are the generated volumes new brains or recalled training subjects?
(:mod:`realdeal.metrics.memorization`; coverage and density cannot tell.)"""

from __future__ import annotations

from pathlib import Path

from realdeal.data.io import load_volume
from realdeal.errors import InputError
from realdeal.metrics.memorization import read_memorization
from realdeal.report.document import Block, Figure, Note, Para, Table
from realdeal.report.sections.context import Context, Skipped


def load_memorization(ctx: Context) -> tuple[dict, dict, list[dict]]:
    """The run's memorisation entry, result and records; :class:`Skipped` without them."""
    sec = ctx.run.section("memorization")
    if not sec or not sec.get("eval"):
        raise Skipped('run.json has no "memorization" entry')
    path = ctx.run.path(sec["eval"]) / "memorization.json"
    try:
        res = read_memorization(path)
    except InputError as e:
        raise Skipped(f"{ctx.run.rel(path)} unusable ({e.problem})") from e
    return sec, res, res["records"]


def verdict(ctx: Context) -> tuple[list[Block], dict[str, dict], Path | None]:
    """The memorisation verdict on the generated sets (a sentence, and a note when there are
    copies), each generated volume's record by name, and the training folder; nothing when the
    run has no memorisation result."""
    try:
        sec, res, records = load_memorization(ctx)
    except Skipped:
        return [], {}, None
    by_set = {s["set"]: s for s in res["summary"]}
    held = by_set.get("held-out")
    blocks: list[Block] = []
    for name in sec.get("generated") or {}:
        s = by_set.get(name)
        if not s or s.get("copies") is None:
            continue
        base = (
            f"; held-out subjects {held['median']:.3f} (new heads through the same autoencoder)"
            if held
            else ""
        )
        line = (
            f"Memorisation (set {name!r}): {s['copies']} of {s['volumes']} volumes are copies of "
            f"training subjects. Median similarity to the nearest training subject "
            f"{s['median']:.3f}{base}; see the section on memorisation."
        )
        blocks.append(Note(line) if s["copies"] else Para(line))
    train = ctx.run.path(sec["train"]) if sec.get("train") else None
    named = {r["subject"]: r for r in records if r["set"] in (sec.get("generated") or {})}
    return blocks, named, train


def memorization_section(ctx: Context) -> list[Block]:
    sec, res, records = load_memorization(ctx)
    summary = res["summary"]
    rows = []
    for s in summary:
        copies = "" if s["copies"] is None else f"{s['copies']} of {s['volumes']}"
        top = f"{s['top_nearest']} ({s['top_count']}×)" if s.get("top_nearest") else ""
        spread = f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"
        rows.append([s["set"], str(s["volumes"]), spread, copies, top])
    thr = res.get("threshold")
    blocks: list[Block] = [
        Para(
            "Each volume's Pearson correlation with its nearest training volume, inside the "
            "training set's foreground. The held-out row is the baseline: real subjects the "
            "generator never saw. A generated volume at less than half their distance from a "
            "training volume is counted as a copy. Coverage and density count copies as "
            "realistic, so read them with this table."
        ),
        Table(
            "Similarity to the nearest training volume",
            ["set", "volumes", "median [min, max]", "copies", "most-matched training subject"],
            rows,
            [
                f"copy threshold {thr:.4f}"
                if thr is not None
                else "no held-out subjects: no threshold"
            ],
        ),
    ]
    generated = [s for s in summary if s["copies"] is not None]
    for s in generated:
        if s["copies"]:
            blocks.append(
                Note(
                    f"{s['copies']} of {s['volumes']} volumes of set {s['set']!r} are copies of "
                    "training subjects: this generator recalls its training set."
                )
            )
    blocks += _closest_pair_figure(ctx, sec, records)
    return blocks


def _closest_pair_figure(ctx: Context, sec: dict, records: list[dict]) -> list[Block]:
    """The generated volume most like a training volume, next to that volume."""
    folders = sec.get("generated") or {}
    train = sec.get("train")
    gen = [r for r in records if r["set"] in folders]
    if not gen or not train:
        return []
    r = max(gen, key=lambda r: r["similarity"])
    files = [
        ctx.run.path(folders[r["set"]]) / f"{r['subject']}.nii.gz",
        ctx.run.path(train) / f"{r['nearest']}.nii.gz",
    ]
    if not all(f.is_file() for f in files):
        return [Note("The closest pair's volumes were not found; no figure.")]
    from realdeal.report.figures import triplanar_png

    vols = [load_volume(f) for f in files]
    path, src = ctx.figure("memorization_closest")
    triplanar_png(
        [v.data for v in vols],
        path,
        titles=[f"{r['set']} {r['subject']}", f"training {r['nearest']}"],
        spacing=vols[0].spacing,
        suptitle=f"similarity {r['similarity']:.3f}",
    )
    caption = (
        f"The generated volume most like a training volume ({r['subject']}, similarity "
        f"{r['similarity']:.3f}) above its nearest training volume ({r['nearest']})."
    )
    return [Figure(src, "closest generated/training pair", caption)]
