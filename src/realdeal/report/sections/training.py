"""Sections "Training curves" (with where each model came from) and "Timings"."""

from __future__ import annotations

import math

import numpy as np

from realdeal.report.cells import MISSING, as_float, fmt_duration, fmt_value
from realdeal.report.document import Block, Figure, Note, Para, Table
from realdeal.report.figures import training_curves_png
from realdeal.report.run import read_metrics_jsonl
from realdeal.report.sections.context import Context, Skipped


def training_section(ctx: Context) -> list[Block]:
    models = ctx.run.section("models")
    if not models:
        raise Skipped('run.json has no "models"')
    curves, rows, notes, remarks = {}, [], [], []
    provenance = ctx.run.section("model_provenance") or {}
    for name, folder in models.items():
        path = ctx.run.path(folder) / "metrics.jsonl"
        if not path.is_file():
            if "shipped" in str(provenance.get(name, {}).get("source", "")):
                remarks.append(f"{name}: the shipped checkpoint comes without a training log.")
            else:
                notes.append(f"{name}: no {ctx.run.rel(path)}")
            continue
        recs, bad = read_metrics_jsonl(path)
        if bad:
            notes.append(f"{name}: {bad} unreadable line(s) in {ctx.run.rel(path)} skipped")
        if not recs:
            notes.append(f"{name}: {ctx.run.rel(path)} has no step/loss records")
            continue
        steps = [float(r["step"]) for r in recs]
        losses = [float(r["loss"]) for r in recs]
        curves[name] = (steps, losses)
        times = [float(r["time"]) for r in recs if isinstance(r.get("time"), (int, float))]
        lr = recs[-1].get("lr")
        rows.append(
            [
                name,
                str(len(recs)),
                f"{int(steps[-1])}",
                fmt_value(losses[-1]),
                fmt_value(float(np.nanmin(losses))),
                fmt_value(float(lr)) if isinstance(lr, (int, float)) else MISSING,
                fmt_duration(times[-1] - times[0]) if len(times) > 1 else MISSING,
            ]
        )
    origin = _provenance_table(ctx, list(models))
    if not curves:
        if origin is not None:
            return [origin, *(Para(r) for r in remarks), *(Note(n) for n in notes)]
        raise Skipped("no model has a metrics.jsonl (" + "; ".join(notes) + ")")
    path, src = ctx.figure("training_curves")
    training_curves_png(curves, path)
    blocks: list[Block] = [*([origin] if origin is not None else []), *(Para(r) for r in remarks)]
    blocks += [
        Figure(src, "training curves", "Training loss against step (log scale), one panel each."),
        Table(
            "Training runs",
            [
                "model",
                "records",
                "last step",
                "final loss",
                "lowest loss",
                "last lr",
                "logged time",
            ],
            rows,
        ),
    ]
    blocks += [Note(n) for n in notes]
    return blocks


def _provenance_table(ctx: Context, kinds: list[str]) -> Table | None:
    """Where each model came from (shipped checkpoint / trained here), with steps and cost."""
    provenance = ctx.run.section("model_provenance")
    sources = ctx.run.section("model_sources") or {}
    if not provenance and not sources:
        return None
    rows = []
    for kind in kinds:
        rec = (provenance or {}).get(kind) or {"source": sources.get(kind, MISSING)}
        seconds = rec.get("train_seconds")
        steps = str(rec.get("steps") or MISSING)
        if (before := rec.get("init_from")) and before.get("steps"):  # fine-tuned: its lineage
            steps += f", after {before['steps']} at batch {before.get('batch_size') or MISSING}"
        rows.append(
            [
                kind,
                str(rec.get("source", MISSING)),
                steps,
                str(rec.get("batch_size") or MISSING),
                str(rec.get("device") or MISSING),
                fmt_duration(float(seconds)) if isinstance(seconds, (int, float)) else MISSING,
                str(rec.get("made_by") or MISSING),
                str(rec.get("commit") or MISSING)[:10],
            ]
        )
    return Table(
        "Where the models came from",
        ["model", "source", "steps", "batch", "device", "training time", "made by", "commit"],
        rows,
    )


def timings_section(ctx: Context) -> list[Block]:
    timings = ctx.run.section("timings")
    if not timings:
        raise Skipped('run.json has no "timings"')
    rows, total = [], 0.0
    for stage, sec in timings.items():
        s = as_float(sec)
        total += s if math.isfinite(s) else 0.0
        rows.append([str(stage), fmt_value(s), fmt_duration(s)])
    rows.append(["total", fmt_value(total), fmt_duration(total)])
    return [Table("Wall time per stage", ["stage", "seconds", "time"], rows)]
