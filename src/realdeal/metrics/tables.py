"""Result tables laid out like the paper's Tables 1–6, in Markdown, CSV and JSON.

Records are plain dicts ``{"subject", "set", "metric", "axis", "value"}`` (``axis`` is
``dim0``/``dim1``/``dim2`` or ``""``). Per-subject metrics are summarised per (set, metric,
axis) by their mean over subjects and a percentile bootstrap confidence interval (subjects
resampled with replacement, seeded: a mean is not biased by repeated subjects). Set-level
metrics (FID, coverage, ...) arrive already summarised by :mod:`realdeal.metrics.suite` with a
jackknife interval (:func:`jackknife_ci`): resampling with replacement would duplicate patches,
which biases Fréchet distances and PRDC (a draw's FD was above the full set's almost always,
so intervals could exclude their own estimate). Cells print ``mean [low, high]``; each table
ends with a footnote saying how its intervals (and, paired, its regions) were obtained.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from realdeal.utils.fs import write_text_atomic

DIMS = ("dim0", "dim1", "dim2")
ORIGINAL = "original"
SUMMARY_COLUMNS = ("set", "metric", "axis", "mean", "ci_low", "ci_high", "n")
RECORD_COLUMNS = ("subject", "set", "metric", "axis", "value")

_FIXED_LABELS = {
    "lpips": "LPIPS ↓",
    "hog_brain": "HOG whole brain ↓",
    "hog_cerebellum": "HOG cerebellum ↓",
    "kl_white_matter": "KL WM ↓",
    "kl_lateral_ventricles": "KL ventricles ↓",
    "sharpness": "Sharpness ↑",
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "seam": "Seam score",
    "fid": "FID ↓",
    "fd_patchstats": "FD patch-stats ↓",
}

#: PRDC metrics per neighbourhood size, in either feature space: ``coverage_k10``,
#: ``precision_k5_patchstats``, …
_PRDC_METRIC = re.compile(r"(precision|recall|density|coverage)_k(\d+)(?:_patchstats)?")


def metric_label(metric: str) -> str:
    """The label a table shows for ``metric``: a fixed one (``LPIPS ↓``), one made from a
    PRDC metric's name (``coverage_k10_patchstats`` → ``Coverage k=10 ↑``), else the name."""
    if metric in _FIXED_LABELS:
        return _FIXED_LABELS[metric]
    m = _PRDC_METRIC.fullmatch(metric)
    if m:
        return f"{m.group(1).capitalize()} k={m.group(2)} ↑"
    return metric


class _Labels(dict):
    """The labels of :func:`metric_label` as a mapping: ``get`` and ``[]`` also answer for
    PRDC metrics of any ``k``, so a table made in any process labels them the same way."""

    def __missing__(self, metric: str) -> str:
        label = metric_label(metric)
        if label == metric:
            raise KeyError(metric)
        return label

    def get(self, metric, default=None):  # type: ignore[override]
        try:
            return self[metric]
        except KeyError:
            return default


LABELS: dict[str, str] = _Labels(_FIXED_LABELS)
"""Metric name → table label (:func:`metric_label`)."""


def bootstrap_ci(
    values: Sequence[float], n_bootstrap: int, ci: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``nan`` bounds if < 2 values or no resamples)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if len(v) < 2 or n_bootstrap <= 0:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(v), size=(n_bootstrap, len(v)))
    means = v[idx].mean(axis=1)
    a = (1 - ci) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def jackknife_ci(
    estimate: float,
    leave_one_out: Sequence[float],
    n: int,
    ci: float,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """Jackknife interval ``estimate ± t(n−1)·SE`` clipped to ``bounds``; it contains the estimate.

    ``leave_one_out`` are the statistic on the set without one subject each, for all ``n``
    subjects or a random subset of them: SE² = (n−1)²/n · s² with s² their sample variance
    (ddof 1), which for all ``n`` values is the textbook (n−1)/n · Σ(θ₍ᵢ₎ − θ̄)² and otherwise
    estimates it. No subset repeats a subject, so no patch is duplicated. ``nan`` bounds with
    fewer than 2 values or a non-finite estimate.
    """
    v = np.asarray([x for x in leave_one_out if math.isfinite(x)], dtype=np.float64)
    if n < 2 or len(v) < 2 or not math.isfinite(estimate):
        return float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf((1 + ci) / 2, n - 1)) * math.sqrt((n - 1) ** 2 / n * v.var(ddof=1))
    return max(estimate - half, bounds[0]), min(estimate + half, bounds[1])


def summarize(
    records: Iterable[dict], n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0
) -> list[dict]:
    """Mean and bootstrap CI per (set, metric, axis) over subjects, in first-seen order."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        groups.setdefault((r["set"], r["metric"], r["axis"]), []).append(float(r["value"]))
    rng = np.random.default_rng(seed)
    out = []
    for (s, m, a), vals in groups.items():
        finite = [x for x in vals if math.isfinite(x)]
        mean = float(np.mean(finite)) if finite else float("nan")
        lo, hi = bootstrap_ci(vals, n_bootstrap, ci, rng)
        out.append(
            {
                "set": s,
                "metric": m,
                "axis": a,
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "n": len(vals),
            }
        )
    return out


def fmt(x: float) -> str:
    """Four significant digits, as the paper prints."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


def cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if math.isnan(row.get("ci_low", float("nan"))):
        return fmt(row["mean"])
    return f"{fmt(row['mean'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def _index(summary: Iterable[dict]) -> dict[tuple[str, str, str], dict]:
    return {(r["set"], r["metric"], r["axis"]): r for r in summary}


def _markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def metric_table(
    title: str,
    summary: Iterable[dict],
    sets: Sequence[str],
    per_axis: Sequence[str],
    scalar: Sequence[str],
) -> str | None:
    """Rows = sets; columns = each per-axis metric × dim0/1/2, then scalar metrics.

    Metrics with no values in ``summary`` are left out; ``None`` if nothing remains.
    """
    idx = _index(summary)
    present = {m for (_, m, _) in idx}
    per_axis = [m for m in per_axis if m in present]
    scalar = [m for m in scalar if m in present]
    if not per_axis and not scalar:
        return None
    header = (
        [""]
        + [f"{metric_label(m)} {d}" for m in per_axis for d in DIMS]
        + [metric_label(m) for m in scalar]
    )
    rows = []
    for s in sets:
        cells = [cell(idx.get((s, m, d))) for m in per_axis for d in DIMS] + [
            cell(idx.get((s, m, ""))) for m in scalar
        ]
        if any(c != "–" for c in cells):
            rows.append([s, *cells])
    return _markdown(title, header, rows) if rows else None


def _with_footnote(table: str | None, footnote: str) -> str | None:
    return None if table is None else f"{table}\n*{footnote}*\n"


def _has_intervals(summary: Iterable[dict]) -> bool:
    return any(math.isfinite(r.get("ci_low", math.nan)) for r in summary)


def paired_footnote(
    labels_note: str | None, n_bootstrap: int, ci: float, intervals: bool = True
) -> str:
    """Where a paired table's regions came from, and how its intervals were computed."""
    intervals_text = (
        f"intervals: {ci:.0%} percentile bootstrap of the mean over subjects "
        f"({n_bootstrap} resamples)"
        if intervals and n_bootstrap > 0
        else "no intervals (fewer than 2 subjects or no resamples)"
    )
    return "; ".join(p for p in (labels_note, intervals_text) if p) + "."


def unpaired_footnote(ci: float, intervals: bool = True) -> str:
    """How the unpaired tables' intervals were computed."""
    if not intervals:
        return "No intervals (fewer than 2 generated subjects or no resamples)."
    return (
        f"Intervals: {ci:.0%} jackknife over the generated set's subjects (each subject left "
        "out in turn; estimate ± t·SE, clipped to the metric's range). Unlike a bootstrap it "
        "never duplicates a patch, which would bias FD and PRDC; the interval contains the "
        "estimate by construction. Original row: the real set against a second draw of "
        "patch positions from the same images."
    )


def distance_title(metrics: Iterable[str]) -> str:
    """Title of the paired distance table (the paper's Table 1), naming only the metrics
    among ``metrics`` (those computed): LPIPS, HOG texture, noise KL, and the supplement's
    Table 4 when the ventricles' KL is there."""
    have = set(metrics)
    parts = [
        name
        for name, keys in (
            ("LPIPS", {"lpips"}),
            ("HOG texture", {"hog_brain", "hog_cerebellum"}),
            ("noise KL", {"kl_white_matter", "kl_lateral_ventricles"}),
        )
        if have & keys
    ]
    title = "Table 1 — distance to the original"
    if parts:
        title += f" ({', '.join(parts)}"
        title += "; suppl. Table 4: ventricles)" if "kl_lateral_ventricles" in have else ")"
    return title


def paired_markdown(
    summary: list[dict],
    candidate_sets: Sequence[str],
    labels_note: str | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
) -> str:
    """Tables 1, 4 and 2 of the paper (plus PSNR/SSIM/seam) for a paired evaluation.

    Each table ends with :func:`paired_footnote`: ``labels_note`` says where the regions came
    from (given label maps or automatic ones), then how the intervals were computed.
    """
    foot = paired_footnote(labels_note, n_bootstrap, ci, _has_intervals(summary))
    parts = [
        metric_table(
            distance_title({r["metric"] for r in summary}),
            summary,
            candidate_sets,
            ["lpips", "hog_brain", "hog_cerebellum"],
            ["kl_white_matter", "kl_lateral_ventricles"],
        ),
        metric_table(
            "Table 2 — sharpness (variance of the Laplacian in random 3D patches)",
            summary,
            [ORIGINAL, *candidate_sets],
            [],
            ["sharpness"],
        ),
        metric_table(
            "Paired fidelity inside the brain", summary, candidate_sets, [], ["psnr", "ssim"]
        ),
        metric_table("Seam score", summary, [ORIGINAL, *candidate_sets], [], ["seam"]),
    ]
    return "\n".join(t for t in (_with_footnote(p, foot) for p in parts) if t)


def unpaired_markdown(
    summary: list[dict],
    sets: Sequence[str],
    fd_metric: str,
    suffix: str,
    ks: Sequence[int],
    ci: float = 0.95,
) -> str:
    """Tables 3, 5, 6 of the paper (FD, coverage, density per k) plus precision/recall.

    ``fd_metric`` is ``fid`` (Inception) or ``fd_patchstats``; ``suffix`` marks the PRDC
    feature space in metric names (``""`` for Inception, ``"_patchstats"`` otherwise). Each
    table ends with :func:`unpaired_footnote`.
    """
    foot = unpaired_footnote(ci, _has_intervals(summary))
    space = " (Inception features)" if not suffix else " (patch-stats features — not Inception)"
    rows = [*sets, ORIGINAL]
    parts = []
    for k in ks:
        cov, den = f"coverage_k{k}{suffix}", f"density_k{k}{suffix}"
        per_axis = ([fd_metric] if k == 10 or (10 not in ks and k == ks[0]) else []) + [cov, den]
        parts.append(metric_table(f"k = {k}{space}", summary, rows, per_axis, []))
    parts.append(
        metric_table(
            f"Precision / recall{space}",
            summary,
            rows,
            [m for k in ks for m in (f"precision_k{k}{suffix}", f"recall_k{k}{suffix}")],
            [],
        )
    )
    return "\n".join(p for p in parts if p) + f"\n*{foot}*\n"


def to_csv(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with the given columns."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Iterable[dict], columns: Sequence[str]) -> None:
    write_text_atomic(path, to_csv(rows, columns))
