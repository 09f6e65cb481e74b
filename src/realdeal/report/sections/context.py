"""What the report's sections share: the run, the output folder, cached inputs, and how a
section says its inputs are missing (:class:`Skipped`, shown as a one-line note)."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from realdeal.data.io import Volume, load_volume, nifti_stem
from realdeal.errors import InputError
from realdeal.metrics import tables as T
from realdeal.report.cells import as_float
from realdeal.report.run import Run

MAX_SUBJECTS = 3
MAX_SAMPLES = 3
ZOOM_FACTOR = 3.0


class Skipped(Exception):
    """A section's inputs are missing; the message is the one-line note."""


class Context:
    """What sections share: the run, the output folder, cached inputs, machine-readable results."""

    def __init__(self, run: Run, out: Path):
        self.run = run
        self.out = out
        self.figures = out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.figure_files: list[str] = []
        self.comparison: list[dict[str, Any]] = []
        self._dataset: Any = None
        self._evals: dict[str, dict] = {}

    def dataset(self):
        """The run's prepared dataset, or :class:`Skipped` if there is none."""
        if self._dataset is None:
            from realdeal.data.dataset import PreparedDataset

            data = self.run.manifest.get("data")
            if not data:
                raise Skipped('run.json has no "data" (prepared dataset)')
            try:
                self._dataset = PreparedDataset(self.run.path(data))
            except InputError as e:
                raise Skipped(f"prepared dataset unusable: {e}") from e
        return self._dataset

    def refined_by(self) -> str:
        """One sentence naming the refiner and sampling that made the refined sets (from
        ``run.json``), or ``""`` where the run does not record them."""
        cfg = self.run.manifest.get("config") or {}
        sampling = cfg.get("refine_sampling") if isinstance(cfg, dict) else None
        refiner = self.run.manifest.get("refiner") or "models/refiner"
        if not isinstance(sampling, dict) or not isinstance(refiner, str):
            return ""
        who = "the refiner's few-step student" if refiner.endswith("student") else "the refiner"
        how = f"{sampling.get('sampler')} sampler, {sampling.get('steps')} steps"
        if sampling.get("sampler") == "ddim":
            how += f", η = {sampling.get('eta')}, {sampling.get('spacing')} spacing"
        return f"Refined by {who} ({refiner}; {how}). "

    def figure(self, name: str) -> tuple[Path, str]:
        """(file to write, relative src) of a figure called ``name`` (sanitised, ``.png``)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"
        src = f"figures/{safe}.png"
        self.figure_files.append(src)
        return self.out / src, src

    def evaluation(self, mode: str) -> dict:
        """Summary rows, sets, config and records of ``realdeal evaluate <mode>`` (cached)."""
        if mode not in self._evals:
            sec = self.run.section(mode)
            if not sec:
                raise Skipped(f'run.json has no "{mode}" entry')
            if not sec.get("eval"):
                raise Skipped(f'run.json has no "{mode}.eval" folder')
            self._evals[mode] = read_evaluation(self.run.path(sec["eval"]), self.run)
        return self._evals[mode]


def read_evaluation(folder: Path, run: Run | None = None) -> dict[str, Any]:
    """Read an ``realdeal evaluate`` output folder: ``results.json``, else ``summary.csv``.

    Returns ``{"summary": [...], "sets": [...], "config": {...}, "records": [...],
    "source": file}``; summary rows hold floats (nan where undefined).
    """
    shown = run.rel(folder) if run else str(folder)
    rj, sc = folder / "results.json", folder / "summary.csv"
    if rj.is_file():
        try:
            res = json.loads(rj.read_text())
            summary = res["summary"]
            if not isinstance(summary, list):
                raise TypeError("summary is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = f"no {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise Skipped(f"{shown}/results.json unreadable ({why})") from e
        sets, config, records, source = res.get("sets"), res.get("config"), res.get("records"), rj
    elif sc.is_file():
        try:
            with sc.open(newline="") as f:
                summary = list(csv.DictReader(f))
        except (OSError, ValueError, csv.Error) as e:  # ValueError: not UTF-8 text
            raise Skipped(f"{shown}/summary.csv unreadable ({e})") from e
        sets, config, records, source = None, {}, [], sc
    else:
        raise Skipped(f"no results.json or summary.csv in {shown}")
    rows = []
    for r in summary:
        if not isinstance(r, dict) or not {"set", "metric"} <= set(r):
            continue
        rows.append(
            {
                "set": str(r["set"]),
                "metric": str(r["metric"]),
                "axis": str(r.get("axis") or ""),
                "mean": as_float(r.get("mean")),
                "ci_low": as_float(r.get("ci_low")),
                "ci_high": as_float(r.get("ci_high")),
                "n": r.get("n"),
            }
        )
    if not isinstance(sets, list):
        sets = list(dict.fromkeys(r["set"] for r in rows if r["set"] != T.ORIGINAL))
    return {
        "summary": rows,
        "sets": sets,
        "config": config if isinstance(config, dict) else {},
        "records": records if isinstance(records, list) else [],
        "source": source,
    }


def nifti_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        nifti_stem(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith(".")
    }


def candidate_sets(ctx: Context, mode: str) -> tuple[dict[str, Path], list[str]]:
    """Existing candidate folders of ``paired``/``unpaired`` and notes for the missing ones."""
    sec = ctx.run.section(mode) or {}
    found, notes = {}, []
    for name, folder in (sec.get("sets") or {}).items():
        p = ctx.run.path(folder)
        if p.is_dir():
            found[name] = p
        else:
            notes.append(f"{name}: folder {ctx.run.rel(p)} not found")
    return found, notes


def paired_inputs(ctx: Context, why: str = "") -> tuple[Any, dict[str, Path], list[str], list[str]]:
    """The paired entry's prepared dataset, existing candidate folders, notes on the missing
    ones, and the held-out subjects to show; :class:`Skipped` (``why`` added) without one."""
    sec = ctx.run.section("paired")
    if not sec:
        raise Skipped(f'run.json has no "paired" entry{why}')
    ds = ctx.dataset()
    sets, missing = candidate_sets(ctx, "paired")
    return ds, sets, missing, sec.get("subjects") or ds.ids("test")


def load_candidates(
    sets: dict[str, Path], sid: str, original: Volume
) -> Iterator[tuple[str, Volume]]:
    """The candidates of subject ``sid`` that exist and share the original's shape."""
    for name, folder in sets.items():
        path = folder / f"{sid}.nii.gz"
        if path.is_file():
            vol = load_volume(path)
            if vol.shape == original.shape:
                yield name, vol
