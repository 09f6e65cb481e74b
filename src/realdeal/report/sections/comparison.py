"""Sections "Paired metrics" and "Unpaired metrics": our evaluation's values beside the
paper's (:mod:`realdeal.report.paper_values`), in the paper's table layout, and the metrics
no paper table has."""

from __future__ import annotations

import dataclasses
import re

from realdeal.metrics import tables as T
from realdeal.report import paper_values as P
from realdeal.report.cells import MISSING, finite_or_none, fmt_ours
from realdeal.report.document import Block, Note, Para, Table
from realdeal.report.sections.context import Context, Skipped

_SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"


@dataclasses.dataclass(frozen=True)
class _Group:
    """One comparison table: our metric(s) beside the paper's values for the mapped rows."""

    title: str
    metrics: tuple[str, ...]
    per_axis: bool
    original: str = ""  # where the original's row goes: "first", "last" or "" (none)
    missing: str = "not in this run's evaluation results"
    paper_metrics: tuple[str, ...] | None = None  # the paper's names, if ours differ


def _comparison_table(ctx: Context, group: _Group, ev: dict, mode: str) -> Table:
    idx = {(r["set"], r["metric"], r["axis"]): r for r in ev["summary"]}
    present = {r["metric"] for r in ev["summary"]}
    paper_metrics = group.paper_metrics or group.metrics
    sets = [
        *([T.ORIGINAL] if group.original == "first" else []),
        *ev["sets"],
        *([T.ORIGINAL] if group.original == "last" else []),
    ]
    footnotes: list[str] = []
    marks: dict[str, str] = {}
    for m in group.metrics:
        if m not in present:
            marks[m] = _SUPERSCRIPTS[len(footnotes) % len(_SUPERSCRIPTS)]
            footnotes.append(f"{marks[m]} {T.LABELS.get(m, m)}: {group.missing}.")
    axes = P.DIMS if group.per_axis else ("",)
    header = ["set", "paper row"]
    for m in group.metrics:
        for a in axes:
            single = group.per_axis and len(group.metrics) == 1
            label = a if single else f"{T.LABELS.get(m, m)} {a}".strip()
            header += [label, f"{label} (paper)"]
    tables_used: list[str] = []
    rows = []
    for s in sets:
        prow = P.paper_row(s, mode)
        cells = [s, prow or MISSING]
        for m, pm in zip(group.metrics, paper_metrics, strict=True):
            for a in axes:
                ours = idx.get((s, m, a))
                paper = P.paper_value(prow, pm, a)
                cells.append(fmt_ours(ours) + marks.get(m, ""))
                cells.append(MISSING if paper is None else paper.text)
                if paper is not None and paper.table not in tables_used:
                    tables_used.append(paper.table)
                if ours is not None or paper is not None:
                    ctx.comparison.append(
                        {
                            "mode": mode,
                            "set": s,
                            "paper_row": prow,
                            "metric": m,
                            "axis": a,
                            "ours": None if ours is None else finite_or_none(ours["mean"]),
                            "ci_low": None if ours is None else finite_or_none(ours["ci_low"]),
                            "ci_high": None if ours is None else finite_or_none(ours["ci_high"]),
                            "paper": None if paper is None else paper.value,
                            "paper_table": None if paper is None else paper.table,
                        }
                    )
        rows.append(cells)
    title = group.title
    tables_used = tables_used or [t for pm in paper_metrics for t in P.tables_for(pm)]
    if tables_used:
        title += f" — paper: {', '.join(dict.fromkeys(tables_used))}"
    return Table(title, header, rows, footnotes)


def _extra_tables(ev: dict, shown: set[str]) -> list[Block]:
    """Metrics of the evaluation that no paper table has (PSNR, SSIM, seam, precision/recall),
    labelled as the evaluation's own tables label them
    (:func:`realdeal.metrics.tables.metric_label`)."""
    extra = [r for r in ev["summary"] if r["metric"] not in shown]
    if not extra:
        return []
    metrics = list(dict.fromkeys(r["metric"] for r in extra))
    idx = {(r["set"], r["metric"], r["axis"]): r for r in extra}
    sets = list(dict.fromkeys([T.ORIGINAL, *ev["sets"], *(r["set"] for r in extra)]))
    per_axis = [m for m in metrics if any(r["metric"] == m and r["axis"] for r in extra)]
    scalar = [m for m in metrics if m not in per_axis]
    out: list[Block] = []
    if scalar:
        rows = [
            [s, *(fmt_ours(idx.get((s, m, ""))) for m in scalar)]
            for s in sets
            if any((s, m, "") in idx for m in scalar)
        ]
        out.append(
            Table(
                "Further metrics (no paper value)",
                ["set", *(T.metric_label(m) for m in scalar)],
                rows,
            )
        )
    if per_axis:
        rows = [
            [s, T.metric_label(m), *(fmt_ours(idx.get((s, m, d))) for d in P.DIMS)]
            for m in per_axis
            for s in sets
            if any((s, m, d) in idx for d in P.DIMS)
        ]
        out.append(
            Table("Further per-axis metrics (no paper value)", ["set", "metric", *P.DIMS], rows)
        )
    return out


def _eval_intro(ctx: Context, ev: dict, what: str, mode: str) -> list[Block]:
    counts = {}
    for r in ev["summary"]:
        if str(r.get("n") or "").isdigit():
            counts[r["set"]] = max(counts.get(r["set"], 0), int(r["n"]))
    return [
        Para(
            f"{what} from {ctx.run.rel(ev['source'])}"
            + (
                " (subjects: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + ")"
                if counts
                else ""
            )
            + ". Our cells: mean over subjects "
            + (
                "[95 % bootstrap interval over subjects]"
                if mode == "paired"
                else "[95 % leave-one-subject-out jackknife interval]"
            )
            + ". Paper values: "
            + P.SETTING
            + ". Scales differ from this run's data and models: compare orderings "
            "(refined vs coarse), not absolute numbers."
        )
    ] + ([Para(str(note))] if (note := (ev.get("config") or {}).get("labels_note")) else [])


def paired_metrics_section(ctx: Context) -> list[Block]:
    ev = ctx.evaluation("paired")
    if not ev["summary"]:
        raise Skipped(f"{ctx.run.rel(ev['source'])} holds no metric values")
    groups = [
        _Group(
            "LPIPS ↓",
            ("lpips",),
            True,
            missing="not computed in this run (needs AlexNet weights; skipped with --no-lpips "
            "or offline)",
        ),
        _Group("HOG distance, whole brain ↓", ("hog_brain",), True),
        _Group("HOG distance, cerebellum ↓", ("hog_cerebellum",), True),
        _Group("Noise KL divergence ↓", ("kl_white_matter", "kl_lateral_ventricles"), False),
        _Group("Sharpness ↑", ("sharpness",), False, original="first"),
    ]
    blocks = _eval_intro(ctx, ev, "Originals vs candidate sets", "paired")
    blocks += [_comparison_table(ctx, g, ev, "paired") for g in groups]
    blocks += _extra_tables(ev, {m for g in groups for m in g.metrics})
    return blocks


def unpaired_metrics_section(ctx: Context) -> list[Block]:
    ev = ctx.evaluation("unpaired")
    if not ev["summary"]:
        raise Skipped(f"{ctx.run.rel(ev['source'])} holds no metric values")
    present = {r["metric"] for r in ev["summary"]}
    cfg = ev["config"].get("unpaired", {}) if isinstance(ev["config"], dict) else {}
    patchstats = cfg.get("features") == "patchstats" or "fd_patchstats" in present
    suffix = "_patchstats" if patchstats else ""
    fd = "fd_patchstats" if patchstats else "fid"
    ks = [int(k) for k in cfg.get("ks") or []] or sorted(
        {int(m) for r in ev["summary"] for m in re.findall(r"^coverage_k(\d+)", r["metric"])}
    )
    ks = sorted(set(ks) | {10}, key=lambda k: (k != 10, k))
    fd_title = "FD on patch statistics ↓" if patchstats else "FID ↓"
    groups = [_Group(fd_title, (fd,), True, original="last", paper_metrics=("fid",))]
    for k in ks:
        for base, label in (("coverage", "Coverage"), ("density", "Density")):
            groups.append(
                _Group(
                    f"{label} k = {k} ↑",
                    (f"{base}_k{k}{suffix}",),
                    True,
                    original="last",
                    paper_metrics=(f"{base}_k{k}",),
                )
            )
    blocks = _eval_intro(
        ctx, ev, "Generated sets vs the real set (original row: real vs real)", "unpaired"
    )
    if patchstats:
        blocks.append(
            Note(
                "Our Fréchet distance and coverage/density use weight-free patch-statistics "
                "features (no Inception weights were available); the paper's use Inception "
                "features, so only orderings compare."
            )
        )
    blocks += [_comparison_table(ctx, g, ev, "unpaired") for g in groups]
    blocks += _extra_tables(ev, {m for g in groups for m in g.metrics})
    blocks += _ceiling_table(ctx, ev, f"coverage_k10{suffix}")
    return blocks


def _ceiling_table(ctx: Context, ev: dict, metric: str) -> list[Block]:
    """Each generated set's coverage as a fraction of the ceiling set's (run.json's
    ``unpaired.ceiling``: decoded volumes of unseen subjects, at the same counts), per axis."""
    ceiling = (ctx.run.section("unpaired") or {}).get("ceiling")
    vals: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for r in ev["summary"]:
        if r["metric"] == metric and isinstance(r.get("mean"), (int, float)):
            vals.setdefault(r["set"], {})[str(r.get("axis"))] = float(r["mean"])
            if isinstance(r.get("n"), (int, float)):
                counts[r["set"]] = max(counts.get(r["set"], 0), int(r["n"]))
    if not ceiling or ceiling not in vals:
        return []
    axes = sorted(vals[ceiling])
    rows, unequal = [], []
    for name, by_axis in vals.items():
        if name in (ceiling, "real", "original"):  # generated sets only
            continue
        ratios = [by_axis.get(a, float("nan")) / vals[ceiling][a] for a in axes]
        n = counts.get(name)
        rows.append([name, str(n or "?"), *(f"{v:.2f}" for v in ratios), f"{min(ratios):.2f}"])
        if n != counts.get(ceiling):
            unequal.append(name)
    notes = [f"ceiling coverage: {', '.join(f'{vals[ceiling][a]:.3f}' for a in axes)} "
             f"({counts.get(ceiling, '?')} volumes)"]  # fmt: skip
    extra: list[Block] = []
    if unequal:
        extra.append(
            Note(
                f"Set(s) {', '.join(repr(u) for u in unequal)} hold another number of volumes "
                f"than the ceiling ({counts.get(ceiling, '?')}): coverage grows with the number "
                "of volumes, so their ratio says little."
            )
        )
    return [
        Para(
            f"The ceiling: set {ceiling!r} holds the autoencoder's reconstructions of as many "
            "held-out subjects as there are samples, other than those of the real set. Raw "
            "samples are decoded by the same autoencoder, so this is the coverage they can reach "
            "at these counts."
        ),
        Table(
            "Coverage k = 10 ÷ the ceiling's", ["set", "volumes", *axes, "worst axis"], rows, notes
        ),
        *extra,
    ]
