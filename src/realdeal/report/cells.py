"""How numbers are written in the report's tables and captions (``—`` for a missing value)."""

from __future__ import annotations

import math
from typing import Any

from realdeal.metrics import tables as T

MISSING = "—"


def as_float(x: Any) -> float:
    """A number from results.json/summary.csv (``None``/empty → nan, ``"inf"`` → inf)."""
    if x is None or x == "":
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def fmt_value(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    return T.fmt(x)


def fmt_ours(row: dict | None) -> str:
    """Our cell: ``mean [low, high]`` (bootstrap CI), ``—`` if absent."""
    if row is None or not math.isfinite(row["mean"]):
        return MISSING
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        return f"{T.fmt(row['mean'])} [{T.fmt(row['ci_low'])}, {T.fmt(row['ci_high'])}]"
    return T.fmt(row["mean"])


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
