"""Memorisation: how close each generated volume comes to its nearest training volume, against
how close a genuinely new subject comes.

A generator trained on few subjects can learn to reproduce them. Coverage and density (and
FID) reward that: a copy of a training subject lies right among the real data. So they cannot
tell a generator that has learned the population from one that recalls its training set. This
module measures the second directly:

- **similarity**: Pearson correlation of two volumes' intensities inside the training set's
  foreground, after block-averaging to at most ``max_voxels`` voxels (a copy is obvious at
  4 mm; full HCP volumes would need gigabytes otherwise). Correlation ignores gain and offset.
- **nearest-training similarity** of a volume: its largest similarity to any training volume.
- **baseline**: the same for each held-out real subject (a new head from the population the
  generator was trained on), and for each training subject against the *other* training
  subjects.
- **copy**: a generated volume at less than half the distance (1 − similarity) from a
  training volume that the closest held-out subject came: similarity above
  ``1 − (1 − s_max) / 2``, where ``s_max`` is the largest held-out similarity. Merely beating
  every held-out subject would not do: a genuinely new subject does that by chance about once
  in (held-out subjects + 1). Without held-out subjects there is no threshold, and only
  similarities are given.

Compare like with like: the training and held-out volumes should have passed through what the
generated ones passed through. For an LDM's decoded samples, that means the autoencoder's
reconstructions of those subjects, not their originals.
What it found on the demo models: docs/results/demo-models.md.

Under ``torchrun`` the ranks split the volumes to load and block-average; rank 0 gathers them
in input order and computes the result exactly as one process does.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from realdeal.config import JsonFields, read_json
from realdeal.data.io import load_volume
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.metrics.subjects import SubjectSet
from realdeal.metrics.tables import write_csv
from realdeal.runtime.distributed import (
    DistInfo,
    Failure,
    broadcast_error,
    check_same,
    gather_shards,
    shard,
)
from realdeal.utils.fs import write_json_atomic, write_text_atomic

COPY_FRACTION = 0.5
"""A copy is closer to its nearest training volume than this fraction of the distance the
closest held-out subject came (:func:`copy_threshold`)."""
COPY_RULE = (
    "a generated volume counts as a copy when its distance (1 − similarity) to its nearest "
    "training volume is less than half the smallest such distance of any held-out subject"
)
"""The copy rule in words, as ``realdeal evaluate --help`` and the tables state it."""

TRAINING_SET = "training (nearest other)"
HELD_OUT_SET = "held-out"
RECORD_COLUMNS = ("set", "subject", "nearest", "similarity", "copy")


@dataclasses.dataclass(frozen=True)
class MemorizationConfig:
    max_voxels: int = 300_000
    """Block-average by the smallest integer factor that leaves at most this many voxels."""
    foreground: float = 0.1
    """The mask: voxels where the mean training volume is above this fraction of the way from
    its 1st to its 99th percentile."""


@dataclasses.dataclass
class MemorizationResult:
    """Per-volume records (``set``, ``subject``, ``nearest``, ``similarity``, ``copy``), a
    summary row per set, the copy threshold (``None`` without held-out subjects) and the
    downsampling factor and mask size used."""

    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    threshold: float | None
    factor: int
    mask_voxels: int
    config: MemorizationConfig

    @property
    def markdown(self) -> str:
        head = (
            "| set | volumes | nearest-training similarity: median [min, max] | copies "
            "(half the held-out distance) | most-matched training subject |"
        )
        lines = ["**Memorisation: similarity to the nearest training volume**", "", head,
                 "|---|---|---|---|---|"]  # fmt: skip
        for s in self.summary:
            copies = "" if s["copies"] is None else f"{s['copies']} of {s['volumes']}"
            top = f"{s['top_nearest']} ({s['top_count']}×)" if s["top_nearest"] else ""
            lines.append(
                f"| {s['set']} | {s['volumes']} | {s['median']:.3f} [{s['min']:.3f}, "
                f"{s['max']:.3f}] | {copies} | {top} |"
            )
        thr = (
            f"{COPY_RULE} (similarity above {self.threshold:.4f})"
            if self.threshold is not None
            else "no held-out subjects given: no copy threshold"
        )
        lines += [
            "",
            f"*Pearson correlation inside the training set's foreground ({self.mask_voxels:,} "
            f"voxels after {self.factor}× block averaging); {thr}.*",
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "factor": self.factor,
            "mask_voxels": self.mask_voxels,
            "threshold": self.threshold,
            "summary": self.summary,
            "records": self.records,
        }

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """``memorization.json``, ``per_subject.csv`` and ``tables.md`` in ``out_dir``, each
        written atomically."""
        out = Path(out_dir)
        paths = {n: out / n for n in ("memorization.json", "per_subject.csv", "tables.md")}
        write_json_atomic(paths["memorization.json"], self.to_json())
        write_csv(paths["per_subject.csv"], self.records, RECORD_COLUMNS)
        write_text_atomic(paths["tables.md"], self.markdown + "\n")
        return paths


def read_memorization(path: str | os.PathLike) -> dict[str, Any]:
    """The ``memorization.json`` that :meth:`MemorizationResult.write` wrote, checked for every
    entry a reader uses (summary rows: set, volumes, copies, median/min/max, most-matched
    subject; records: set, subject, nearest, similarity; the threshold). A file that is cut
    off, not JSON or missing an entry is one :class:`~realdeal.errors.InputError` line naming
    it and the entry."""

    path = Path(path)
    res = JsonFields(path, read_json(path, "memorisation result"))
    number = (int, float)
    res.get("threshold", number, optional=True)
    for row in res.objects("summary"):
        row.get("set", str)
        row.get("volumes", int)
        row.get("copies", int, optional=True)
        for key in ("median", "min", "max"):
            row.get(key, number)
        if row.get("top_nearest", str, optional=True):
            row.get("top_count", int)
    for rec in res.objects("records"):
        for key in ("set", "subject", "nearest"):
            rec.get(key, str)
        rec.get("similarity", number)
    return res.data


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """``x`` averaged over ``factor``³ blocks (edges that do not fill a block are dropped)."""
    if factor == 1:
        return x.astype(np.float32, copy=False)
    s = [n // factor * factor for n in x.shape]
    if min(s) == 0:
        raise ConfigError(f"volume {x.shape} is smaller than one {factor}³ block")
    y = x[: s[0], : s[1], : s[2]].astype(np.float32)
    y = y.reshape(s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor)
    return y.mean(axis=(1, 3, 5))


def factor_for(shape: tuple[int, ...], max_voxels: int) -> int:
    """The smallest integer block side that leaves at most ``max_voxels`` voxels."""
    f = max(1, math.ceil((math.prod(shape) / max_voxels) ** (1 / 3)))
    while math.prod(n // f for n in shape) > max_voxels:
        f += 1
    return f


class _Loader:
    """Loads volumes of one grid, block-averaged; a volume on another grid is an error naming
    its file."""

    def __init__(self, factor: int | None, max_voxels: int):
        self.shape: tuple[int, ...] | None = None
        self.first: str = ""
        self.factor = factor
        self.max_voxels = max_voxels

    def __call__(self, path: Path) -> np.ndarray:

        x = np.asarray(load_volume(path).data)
        if x.ndim != 3:
            raise InputError(path, f"expected a 3D volume, got shape {x.shape}")
        if self.shape is None:
            self.shape, self.first = x.shape, str(path)
            self.factor = self.factor or factor_for(x.shape, self.max_voxels)
        elif x.shape != self.shape:
            raise InputError(
                path, f"shape {x.shape} differs from {self.shape} of {self.first}: "
                "memorisation compares volumes on one grid",
            )  # fmt: skip
        return block_mean(x, self.factor)


def copy_threshold(held_out_similarities: list[float]) -> float:
    """The similarity above which a generated volume is a copy (:data:`COPY_RULE`):
    ``1 − COPY_FRACTION · (1 − s_max)``, ``s_max`` the largest held-out similarity."""
    return 1 - COPY_FRACTION * (1 - max(held_out_similarities))


def _unit_rows(vols: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Each volume's masked voxels, centred and scaled to unit norm (rows of a matrix)."""
    m = np.stack([v[mask] for v in vols]).astype(np.float64)
    m -= m.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _summary(set_name: str, recs: list[dict[str, Any]], with_copies: bool) -> dict[str, Any]:
    sims = np.array([r["similarity"] for r in recs])
    top = Counter(r["nearest"] for r in recs).most_common(1)
    return {
        "set": set_name,
        "volumes": len(recs),
        "median": float(np.median(sims)),
        "min": float(sims.min()),
        "max": float(sims.max()),
        "copies": sum(bool(r["copy"]) for r in recs) if with_copies else None,
        "top_nearest": top[0][0] if top else "",
        "top_count": top[0][1] if top else 0,
    }


def _load_all(
    paths: list[Path], config: MemorizationConfig, dist: DistInfo | None
) -> tuple[list[np.ndarray], int] | None:
    """Every volume of ``paths`` block-averaged, and the factor; under torchrun each rank loads
    its share and rank 0 gets them all in order (the other ranks ``None``). The first volume
    fixes the grid and the factor, so every rank loads it. A bad volume raises on every rank
    (the first in order, as one process would)."""
    load = _Loader(None, config.max_voxels)
    index = shard(range(len(paths)), dist)
    mine: list[np.ndarray | Failure | None] = [None] * len(index)
    try:
        if index[:1] != [0]:
            load(paths[0])
    except RealDealError:
        pass  # rank 0 meets the same error at the same volume and reports it
    else:
        for j, i in enumerate(index):
            try:
                mine[j] = load(paths[i])
            except RealDealError as e:
                mine[j] = Failure.of(e)
                break
    vols = gather_shards(mine, len(paths), dist)
    failed = None if vols is None else next((v for v in vols if isinstance(v, Failure)), None)
    broadcast_error(None if failed is None else failed.error(), dist)
    if vols is None:
        return None
    return vols, int(load.factor or 1)


def evaluate_memorization(
    train: SubjectSet,
    generated: list[SubjectSet],
    held_out: SubjectSet | None = None,
    config: MemorizationConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    dist: DistInfo | None = None,
) -> MemorizationResult | None:
    """Nearest-training similarity of every generated and held-out volume (module docstring).

    Every volume must be on the training volumes' grid. ``out_dir``: write the result there.
    Under torchrun (``dist``) the ranks split the loading; rank 0 returns (and writes) the
    result, the other ranks return ``None``.
    """
    config = config or MemorizationConfig()
    if len(train) < 2:
        raise ConfigError("memorisation needs at least 2 training volumes")
    held = held_out if held_out is not None and len(held_out) else None
    inputs = [train, *([held] if held is not None else []), *generated]
    check_same([(s.name, s.ids) for s in inputs], dist, "the volumes of the sets")
    loaded = _load_all([p for s in inputs for p in s.paths.values()], config, dist)
    if loaded is None:
        return None  # rank 0 computes and writes the result
    everything, factor = loaded
    vols, start = {}, 0
    for i, s in enumerate(inputs):
        vols[i] = everything[start : start + len(s)]
        start += len(s)
    train_vols = vols[0]
    mean = np.mean(train_vols, axis=0)
    lo, hi = np.percentile(mean, [1, 99])
    mask = mean > lo + config.foreground * (hi - lo)
    if mask.sum() < 100:
        raise ConfigError(f"the training set's foreground has only {int(mask.sum())} voxels")
    T = _unit_rows(train_vols, mask)
    names = train.ids

    def nearest(rows: np.ndarray, exclude_self: bool = False) -> list[tuple[str, float]]:
        sims = rows @ T.T
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        idx = sims.argmax(axis=1)
        return [(names[j], float(sims[i, j])) for i, j in enumerate(idx)]

    records: list[dict[str, Any]] = []
    sets: list[tuple[str, list[dict[str, Any]]]] = []
    # the training subjects against the others: how alike two subjects of the cohort are
    recs = [{"set": TRAINING_SET, "subject": s, "nearest": n, "similarity": v, "copy": None}
            for s, (n, v) in zip(names, nearest(T, exclude_self=True), strict=True)]  # fmt: skip
    sets.append((TRAINING_SET, recs))
    threshold = None
    if held is not None:
        rows = _unit_rows(vols[1], mask)
        recs = [{"set": HELD_OUT_SET, "subject": s, "nearest": n, "similarity": v, "copy": None}
                for s, (n, v) in zip(held.ids, nearest(rows), strict=True)]  # fmt: skip
        threshold = copy_threshold([r["similarity"] for r in recs])
        sets.append((HELD_OUT_SET, recs))
    for i, g in enumerate(generated, start=len(inputs) - len(generated)):
        rows = _unit_rows(vols[i], mask)
        recs = [{"set": g.name, "subject": s, "nearest": n, "similarity": v,
                 "copy": None if threshold is None else v > threshold}
                for s, (n, v) in zip(g.ids, nearest(rows), strict=True)]  # fmt: skip
        sets.append((g.name, recs))
    summary = []
    for name, recs in sets:
        records += recs
        is_generated = name not in (TRAINING_SET, HELD_OUT_SET)
        summary.append(_summary(name, recs, is_generated and threshold is not None))
    result = MemorizationResult(records, summary, threshold, factor, int(mask.sum()), config)
    if out_dir is not None:
        result.write(out_dir)
    return result
