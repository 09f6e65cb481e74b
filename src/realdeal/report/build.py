"""The run report: ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png``.

:func:`build_report` reads a run folder through its manifest ``run.json`` (format
``realdeal-run``, written by ``realdeal demo``): the prepared dataset, the paired and unpaired
candidate sets and their ``realdeal evaluate`` output folders, the training runs' metrics,
timings, configuration and package versions. It writes, into ``RUN/report/``:

- slice figures of up to three held-out subjects (original | reconstruction | refined, with an
  enlarged cortical box) and of up to three LDM samples next to their refined versions;
- noise maps (image − NLM-denoised image, the noise-KL metric's own denoiser) on one slice;
- the metric tables in the paper's layout, with the paper's HCP values beside ours
  (:mod:`realdeal.report.paper_values`);
- training curves, timings, configuration and versions.

The report is one list of blocks (headings, paragraphs, figures, tables, code) rendered twice,
to self-contained HTML (inline CSS, no scripts, PNGs by relative path) and to Markdown. Every
section whose inputs are missing is replaced by a one-line note, so partial runs still get a
report. The folder is built beside its destination and renamed into place.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import html
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from realdeal import __version__
from realdeal.data.io import Volume, load_volume, nifti_stem
from realdeal.data.labels import LEFT_CORTEX, RIGHT_CORTEX, region_mask
from realdeal.errors import InputError, RealDealError
from realdeal.metrics import tables as T
from realdeal.report import paper_values as P
from realdeal.report.figures import (
    Zoom,
    centre_point,
    cortical_point,
    gallery_png,
    plane_png,
    training_curves_png,
    triplanar_png,
)
from realdeal.utils.fs import atomic_dir, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from realdeal.metrics.noise import NoiseConfig

log = logging.getLogger(__name__)

RUN_FORMAT = "realdeal-run"
RUN_VERSION = 1
REPORT_FORMAT = "realdeal-report"
MAX_SUBJECTS = 3
MAX_SAMPLES = 3
ZOOM_FACTOR = 3.0
MISSING = "—"
_SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"
_PACKAGES = (
    "realdeal",
    "torch",
    "monai",
    "numpy",
    "scipy",
    "nibabel",
    "dipy",
    "scikit-image",
    "matplotlib",
    "lpips",
    "pytorch-fid",
)


# --------------------------------------------------------------------------- the run manifest
@dataclasses.dataclass
class Run:
    """A run folder and its parsed ``run.json`` (paths in it are relative to ``root``)."""

    root: Path
    manifest: dict[str, Any]

    @property
    def manifest_path(self) -> Path:
        return self.root / "run.json"

    def path(self, value: str | os.PathLike) -> Path:
        """A path from the manifest, resolved against the run folder."""
        return self.root / Path(value)

    def rel(self, path: Path) -> str:
        """``path`` relative to the run folder, for display."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def section(self, key: str) -> dict[str, Any] | None:
        """An optional dict entry of the manifest (``paired``, ``unpaired``, ``models`` …)."""
        return self.manifest.get(key)


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read and check ``RUN/run.json``; any problem is one :class:`InputError` line."""
    root = Path(run_dir)
    path = root / "run.json"
    if not root.is_dir():
        raise InputError(root, "run folder not found")
    if not path.is_file():
        raise InputError(path, "no run manifest; not a realdeal run folder (run `realdeal demo`)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"unreadable run manifest ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(path, f"not a realdeal run manifest (format={found!r})")
    version = meta.get("version", 1)
    if not isinstance(version, int) or version > RUN_VERSION:
        raise InputError(path, f"unsupported run manifest version {version!r} (newest: 1)")
    for key in ("models", "paired", "unpaired", "timings", "versions"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise InputError(path, f"{key!r} must be a JSON object")
    for key in ("paired", "unpaired"):
        sets = (meta.get(key) or {}).get("sets")
        if sets is not None and not isinstance(sets, dict):
            raise InputError(path, f"{key}.sets must be a JSON object of name → folder")
    for where, value in _manifest_paths(meta):
        if not isinstance(value, str) or not value:
            raise InputError(path, f"{where} must be a path (string), got {value!r}")
    subjects = (meta.get("paired") or {}).get("subjects")
    if subjects is not None and not (
        isinstance(subjects, list) and all(isinstance(s, str) for s in subjects)
    ):
        raise InputError(path, "paired.subjects must be a list of subject ids")
    return Run(root, meta)


def _manifest_paths(meta: dict) -> list[tuple[str, Any]]:
    """Every (key path, value) of the manifest that must be a path string."""
    out = []
    if "data" in meta:
        out.append(("data", meta["data"]))
    for name, value in (meta.get("models") or {}).items():
        out.append((f"models.{name}", value))
    for key in ("paired", "unpaired"):
        sec = meta.get(key) or {}
        for name, value in (sec.get("sets") or {}).items():
            out.append((f"{key}.sets.{name}", value))
        for field in ("eval", "real"):
            if field in sec:
                out.append((f"{key}.{field}", sec[field]))
    return out


# --------------------------------------------------------------------------- document blocks
@dataclasses.dataclass
class Para:
    text: str


@dataclasses.dataclass
class Note:
    """A one-line note: a skipped section or missing input."""

    text: str


@dataclasses.dataclass
class Figure:
    src: str
    alt: str
    caption: str


@dataclasses.dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    footnotes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Code:
    """A collapsible block of JSON (HTML ``<details>``, Markdown fenced code)."""

    summary: str
    text: str


Block = Para | Note | Figure | Table | Code


class _Skip(Exception):
    """A section's inputs are missing; the message is the one-line note."""


# --------------------------------------------------------------------------- context
class _Context:
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
        """The run's prepared dataset, or :class:`_Skip` if there is none."""
        if self._dataset is None:
            from realdeal.data.dataset import PreparedDataset

            data = self.run.manifest.get("data")
            if not data:
                raise _Skip('run.json has no "data" (prepared dataset)')
            try:
                self._dataset = PreparedDataset(self.run.path(data))
            except InputError as e:
                raise _Skip(f"prepared dataset unusable: {e}") from e
        return self._dataset

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
                raise _Skip(f'run.json has no "{mode}" entry')
            if not sec.get("eval"):
                raise _Skip(f'run.json has no "{mode}.eval" folder')
            self._evals[mode] = _read_evaluation(self.run.path(sec["eval"]), self.run)
        return self._evals[mode]


def _num(x: Any) -> float:
    """A number from results.json/summary.csv (``None``/empty → nan, ``"inf"`` → inf)."""
    if x is None or x == "":
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _read_evaluation(folder: Path, run: Run | None = None) -> dict[str, Any]:
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
            raise _Skip(f"{shown}/results.json unreadable ({e})") from e
        sets, config, records, source = res.get("sets"), res.get("config"), res.get("records"), rj
    elif sc.is_file():
        try:
            with sc.open(newline="") as f:
                summary = list(csv.DictReader(f))
        except (OSError, csv.Error) as e:
            raise _Skip(f"{shown}/summary.csv unreadable ({e})") from e
        sets, config, records, source = None, {}, [], sc
    else:
        raise _Skip(f"no results.json or summary.csv in {shown}")
    rows = []
    for r in summary:
        if not isinstance(r, dict) or not {"set", "metric"} <= set(r):
            continue
        rows.append(
            {
                "set": str(r["set"]),
                "metric": str(r["metric"]),
                "axis": str(r.get("axis") or ""),
                "mean": _num(r.get("mean")),
                "ci_low": _num(r.get("ci_low")),
                "ci_high": _num(r.get("ci_high")),
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


# --------------------------------------------------------------------------- helpers
def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    return T.fmt(x)


def _ours(row: dict | None) -> str:
    """Our cell: ``mean [low, high]`` (bootstrap CI), ``—`` if absent."""
    if row is None or not math.isfinite(row["mean"]):
        return MISSING
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        return f"{T.fmt(row['mean'])} [{T.fmt(row['ci_low'])}, {T.fmt(row['ci_high'])}]"
    return T.fmt(row["mean"])


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def environment_versions() -> dict[str, str]:
    """Python, platform and the installed versions of realdeal's main dependencies."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _PACKAGES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    out.setdefault("realdeal", __version__)
    return out


def _nifti_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        nifti_stem(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith(".")
    }


def _candidate_sets(ctx: _Context, mode: str) -> tuple[dict[str, Path], list[str]]:
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


# --------------------------------------------------------------------------- sections
def _subjects_section(ctx: _Context) -> list[Block]:
    sec = ctx.run.section("paired")
    if not sec:
        raise _Skip('run.json has no "paired" entry (no held-out reconstructions or refinements)')
    ds = ctx.dataset()
    sets, missing = _candidate_sets(ctx, "paired")
    if not sets:
        raise _Skip("none of the paired candidate folders exists")
    subjects = sec.get("subjects") or ds.ids("test")
    blocks: list[Block] = [
        Para(
            "Held-out subjects in the prepared geometry, all rows in the original's grey-level "
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
        raise _Skip("no held-out subject could be shown")
    return blocks


def _noise_config(ctx: _Context):
    """The noise metric's settings as the paired evaluation used them (default otherwise)."""
    from realdeal.metrics.noise import NoiseConfig, ants_available

    try:
        paired = ctx.evaluation("paired")["config"].get("paired")
    except _Skip:
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


def _noise_section(ctx: _Context) -> list[Block]:
    sec = ctx.run.section("paired")
    if not sec:
        raise _Skip('run.json has no "paired" entry')
    ds = ctx.dataset()
    sets, _ = _candidate_sets(ctx, "paired")
    subjects = sec.get("subjects") or ds.ids("test")
    sid = next(
        (s for s in subjects if any((f / f"{s}.nii.gz").is_file() for f in sets.values())), None
    )
    if sid is None:
        raise _Skip("no held-out subject has a candidate volume")
    original = ds.load_image(sid)
    labels = ds.load_label(sid)
    brain = labels.data > 0 if labels is not None else ds.load_mask(sid)
    point = centre_point(original.data)
    z = point[2]
    if not brain[:, :, z].any():
        raise _Skip(f"{sid}: no brain voxels in the axial slice through the centre")
    cfg, note = _noise_config(ctx)
    vols = {"original": original.data}
    vols.update((name, v.data) for name, v in _load_candidates(sets, sid, original))
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
    backend = (
        f"dipy non-local means (patch radius {cfg.patch_radius}, block radius "
        f"{cfg.block_radius}, σ estimated per image)"
        if cfg.backend == "dipy"
        else "ANTs adaptive non-local means (Rician)"
    )
    region = (
        f"the metric's region (white matter ∪ lateral ventricles, grown by {cfg.margin} voxels)"
        if _metric_mask(lab) is not None
        else "the brain mask (no label map: the metric's regions are unknown)"
    )
    caption = (
        f"{sid}: image − denoised image, denoised with {backend} around {region} exactly as "
        f"the noise-KL metric does; symmetric window ±{T.fmt(w)} (99.5th percentile of the "
        "original's |noise|), intensities on the prepared [-1, 1] scale."
    )
    kl = _subject_kl(ctx, sid)
    if kl:
        caption += f" This subject's KL (WM / ventricles): {kl}."
    blocks: list[Block] = [Figure(src, f"noise maps of {sid}", caption)]
    if note:
        blocks.append(Note(note))
    return blocks


def _metric_mask(labels: np.ndarray | None) -> np.ndarray | None:
    """The noise-KL metric's region (white matter ∪ lateral ventricles), ``None`` if empty."""
    if labels is None:
        return None
    mask = region_mask(labels, "white_matter") | region_mask(labels, "lateral_ventricles")
    return mask if mask.any() else None


def noise_maps(
    volumes: Mapping[str, np.ndarray],
    brain: np.ndarray,
    labels: np.ndarray | None = None,
    config: NoiseConfig | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Noise maps (image − NLM-denoised image) of ``(X, Y, Z)`` volumes on the [-1, 1] scale.

    With FreeSurfer ``labels`` the denoiser runs exactly as the noise-KL metric runs it
    (:func:`realdeal.metrics.noise.noise_residual` on white matter ∪ lateral ventricles), so the
    maps equal the residuals the metric histograms; without, around ``brain``. (The NLM
    output depends on the denoised box, so the metric's own mask is needed for equality.)
    Returns float32 volumes, zero outside ``brain`` and where nothing was denoised.
    """
    from realdeal.metrics.noise import NoiseConfig, noise_residual

    config = config or NoiseConfig()
    mask = _metric_mask(labels)
    mask = brain if mask is None else mask
    return {
        name: np.where(brain, noise_residual(v, mask, config, threads), 0.0).astype(np.float32)
        for name, v in volumes.items()
    }


def _load_candidates(sets: dict[str, Path], sid: str, original: Volume):
    for name, folder in sets.items():
        path = folder / f"{sid}.nii.gz"
        if path.is_file():
            vol = load_volume(path)
            if vol.shape == original.shape:
                yield name, vol


def _subject_kl(ctx: _Context, sid: str) -> str:
    try:
        records = ctx.evaluation("paired")["records"]
    except _Skip:
        return ""
    vals: dict[str, dict[str, float]] = {}
    for r in records:
        if (
            isinstance(r, dict)
            and r.get("subject") == sid
            and r.get("metric", "").startswith("kl_")
        ):
            vals.setdefault(r["set"], {})[r["metric"]] = _num(r.get("value"))
    return "; ".join(
        f"{s} {_fmt(v.get('kl_white_matter'))} / {_fmt(v.get('kl_lateral_ventricles'))}"
        for s, v in vals.items()
    )


@dataclasses.dataclass(frozen=True)
class _Group:
    """One comparison table: our metric(s) beside the paper's values for the mapped rows."""

    title: str
    metrics: tuple[str, ...]
    per_axis: bool
    original: str = ""  # where the original's row goes: "first", "last" or "" (none)
    missing: str = "not in this run's evaluation results"
    paper_metrics: tuple[str, ...] | None = None  # the paper's names, if ours differ


def _comparison_table(ctx: _Context, group: _Group, ev: dict, mode: str) -> Table:
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
                cells.append(_ours(ours) + marks.get(m, ""))
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
                            "ours": None if ours is None else _finite(ours["mean"]),
                            "ci_low": None if ours is None else _finite(ours["ci_low"]),
                            "ci_high": None if ours is None else _finite(ours["ci_high"]),
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


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _extra_tables(ev: dict, shown: set[str]) -> list[Block]:
    """Metrics of the evaluation that no paper table has (PSNR, SSIM, seam, precision/recall)."""
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
            [s, *(_ours(idx.get((s, m, ""))) for m in scalar)]
            for s in sets
            if any((s, m, "") in idx for m in scalar)
        ]
        out.append(
            Table(
                "Further metrics (no paper value)",
                ["set", *(T.LABELS.get(m, m) for m in scalar)],
                rows,
            )
        )
    if per_axis:
        rows = [
            [s, T.LABELS.get(m, m), *(_ours(idx.get((s, m, d))) for d in P.DIMS)]
            for m in per_axis
            for s in sets
            if any((s, m, d) in idx for d in P.DIMS)
        ]
        out.append(
            Table("Further per-axis metrics (no paper value)", ["set", "metric", *P.DIMS], rows)
        )
    return out


def _eval_intro(ctx: _Context, ev: dict, what: str, mode: str) -> list[Block]:
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


def _paired_metrics_section(ctx: _Context) -> list[Block]:
    ev = ctx.evaluation("paired")
    if not ev["summary"]:
        raise _Skip(f"{ctx.run.rel(ev['source'])} holds no metric values")
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


def _unpaired_metrics_section(ctx: _Context) -> list[Block]:
    ev = ctx.evaluation("unpaired")
    if not ev["summary"]:
        raise _Skip(f"{ctx.run.rel(ev['source'])} holds no metric values")
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
    return blocks


def _samples_section(ctx: _Context) -> list[Block]:
    if not ctx.run.section("unpaired"):
        raise _Skip('run.json has no "unpaired" entry (no LDM samples)')
    sets, missing = _candidate_sets(ctx, "unpaired")
    files = {name: _nifti_files(folder) for name, folder in sets.items()}
    files = {n: f for n, f in files.items() if f}
    if not files:
        raise _Skip("no sample volumes found")
    blocks: list[Block] = []
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
            f"LDM samples next to their refined versions ({' | '.join(files)}), one grey-level "
            f"window per figure (the first row's); orange box enlarged {ZOOM_FACTOR:g}×."
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
        data = [v.data for v in vols]
        mask = ndimage.binary_fill_holes(data[0] > data[0].min() + 0.05 * np.ptp(data[0]))
        point = centre_point(np.where(mask, data[0], data[0].min()))
        zc = cortical_point(mask, point, "axial", None, ZOOM_FACTOR)
        path, src = ctx.figure(f"sample_{name}")
        triplanar_png(
            data,
            path,
            titles=list(files),
            point=point,
            spacing=vols[0].spacing,
            suptitle=name,
            zoom=Zoom(zc, "axial", ZOOM_FACTOR),
        )
        blocks.append(Figure(src, f"sample {name}", f"{name}: {' | '.join(files)}."))
    return blocks


def read_metrics_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a training ``metrics.jsonl`` that have numeric ``step`` and ``loss``, and the
    number of lines skipped (blank lines aside)."""
    good, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            float(r["step"]), float(r["loss"])
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        good.append(r)
    return good, bad


def _training_section(ctx: _Context) -> list[Block]:
    models = ctx.run.section("models")
    if not models:
        raise _Skip('run.json has no "models"')
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
                _fmt(losses[-1]),
                _fmt(float(np.nanmin(losses))),
                _fmt(float(lr)) if isinstance(lr, (int, float)) else MISSING,
                _duration(times[-1] - times[0]) if len(times) > 1 else MISSING,
            ]
        )
    origin = _provenance_table(ctx, list(models))
    if not curves:
        if origin is not None:
            return [origin, *(Para(r) for r in remarks), *(Note(n) for n in notes)]
        raise _Skip("no model has a metrics.jsonl (" + "; ".join(notes) + ")")
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


def _provenance_table(ctx: _Context, kinds: list[str]) -> Table | None:
    """Where each model came from (shipped checkpoint / trained here), with steps and cost."""
    provenance = ctx.run.section("model_provenance")
    sources = ctx.run.section("model_sources") or {}
    if not provenance and not sources:
        return None
    rows = []
    for kind in kinds:
        rec = (provenance or {}).get(kind) or {"source": sources.get(kind, MISSING)}
        seconds = rec.get("train_seconds")
        rows.append(
            [
                kind,
                str(rec.get("source", MISSING)),
                str(rec.get("steps") or MISSING),
                str(rec.get("batch_size") or MISSING),
                str(rec.get("device") or MISSING),
                _duration(float(seconds)) if isinstance(seconds, (int, float)) else MISSING,
                str(rec.get("made_by") or MISSING),
                str(rec.get("commit") or MISSING)[:10],
            ]
        )
    return Table(
        "Where the models came from",
        ["model", "source", "steps", "batch", "device", "training time", "made by", "commit"],
        rows,
    )


def _timings_section(ctx: _Context) -> list[Block]:
    timings = ctx.run.section("timings")
    if not timings:
        raise _Skip('run.json has no "timings"')
    rows, total = [], 0.0
    for stage, sec in timings.items():
        s = _num(sec)
        total += s if math.isfinite(s) else 0.0
        rows.append([str(stage), _fmt(s), _duration(s)])
    rows.append(["total", _fmt(total), _duration(total)])
    return [Table("Wall time per stage", ["stage", "seconds", "time"], rows)]


def _config_section(ctx: _Context) -> list[Block]:
    m = ctx.run.manifest
    blocks: list[Block] = []
    if m.get("config") is not None:
        blocks.append(Code("Run configuration (run.json)", json.dumps(m["config"], indent=2)))
    else:
        blocks.append(Note('run.json has no "config".'))
    for name, folder in (m.get("models") or {}).items():
        path = ctx.run.path(folder) / "config.json"
        if path.is_file():
            try:
                text = json.dumps(json.loads(path.read_text()), indent=2)
            except (OSError, ValueError) as e:
                blocks.append(Note(f"{ctx.run.rel(path)} unreadable ({e})."))
                continue
            blocks.append(Code(f"{name} configuration ({ctx.run.rel(path)})", text))
    versions = m.get("versions")
    source = "run.json"
    if not versions:
        versions, source = environment_versions(), "this environment (run.json has none)"
    blocks.append(Code(f"Package versions ({source})", json.dumps(versions, indent=2)))
    return blocks


SECTIONS: tuple[tuple[str, str, Callable[[_Context], list[Block]]], ...] = (
    ("subjects", "Held-out subjects: original, reconstruction, refined", _subjects_section),
    ("noise", "Noise maps", _noise_section),
    ("paired-metrics", "Paired metrics against the paper", _paired_metrics_section),
    ("samples", "LDM samples and their refined versions", _samples_section),
    ("unpaired-metrics", "Unpaired metrics against the paper", _unpaired_metrics_section),
    ("training", "Training curves", _training_section),
    ("timings", "Timings", _timings_section),
    ("config", "Configuration and versions", _config_section),
)


# --------------------------------------------------------------------------- rendering
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
 background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{font-size:1.6em;margin:.2em 0 .3em}h2{font-size:1.25em;margin-top:2em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}
nav ol{columns:2;padding-left:1.4em}a{color:#0b5cad}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
.note{background:#fff8e1;border-left:4px solid #ffb000;padding:.35em .7em;margin:.6em 0}
table{border-collapse:collapse;margin:.4em 0 .2em;font-size:.85em;
 font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d5d5;padding:.2em .45em;text-align:right;white-space:nowrap}
th{background:#f3f5f7}td:first-child,td:nth-child(2),th:first-child{text-align:left}
.tbl{overflow-x:auto;margin-bottom:1em}.tbl h3{font-size:1em;margin:.9em 0 .2em}
.fn{font-size:.82em;color:#555;margin:.1em 0}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.82em}
footer{margin-top:3em;font-size:.85em;color:#666}
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_html(
    title: str, intro: list[Block], sections: list[tuple[str, str, list[Block]]]
) -> str:
    """Self-contained HTML (inline CSS, no scripts) of the report's blocks."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>",
        f"<body><main><h1>{_e(title)}</h1>",
    ]
    out += [_html_block(b) for b in intro]
    out.append("<nav><ol>")
    out += [f'<li><a href="#{_e(a)}">{_e(t)}</a></li>' for a, t, _ in sections]
    out.append("</ol></nav>")
    for anchor, heading, blocks in sections:
        out.append(f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>')
        out += [_html_block(b) for b in blocks]
        out.append("</section>")
    out.append(f"<footer>Built by realdeal {_e(__version__)}.</footer></main></body></html>")
    return "\n".join(out) + "\n"


def _html_block(b: Block) -> str:
    if isinstance(b, Para):
        return f"<p>{_e(b.text)}</p>"
    if isinstance(b, Note):
        return f'<p class="note">{_e(b.text)}</p>'
    if isinstance(b, Figure):
        return (
            f'<figure><img src="{_e(b.src)}" alt="{_e(b.alt)}">'
            f"<figcaption>{_e(b.caption)}</figcaption></figure>"
        )
    if isinstance(b, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        notes = "".join(f'<p class="fn">{_e(n)}</p>' for n in b.footnotes)
        return (
            f'<div class="tbl"><h3>{_e(b.title)}</h3><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{notes}</div>"
        )
    if isinstance(b, Code):
        return f"<details><summary>{_e(b.summary)}</summary><pre>{_e(b.text)}</pre></details>"
    raise TypeError(f"unknown block {b!r}")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(
    title: str, intro: list[Block], sections: list[tuple[str, str, list[Block]]]
) -> str:
    """Markdown of the report's blocks (figures by the same relative PNG paths)."""
    out = [f"# {title}", ""]
    for b in intro:
        out += [_md_block(b), ""]
    for _, heading, blocks in sections:
        out += [f"## {heading}", ""]
        for b in blocks:
            out += [_md_block(b), ""]
    out.append(f"*Built by realdeal {__version__}.*")
    return "\n".join(out) + "\n"


def _md_block(b: Block) -> str:
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Note):
        return f"> **Note:** {b.text}"
    if isinstance(b, Figure):
        return f"![{_md_cell(b.alt)}]({b.src})\n\n*{b.caption}*"
    if isinstance(b, Table):
        lines = [f"**{b.title}**", ""]
        lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
        lines.append("|" + "---|" * len(b.header))
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
        if b.footnotes:
            lines.append("")
            lines += [f"{n}  " for n in b.footnotes]
        return "\n".join(lines)
    if isinstance(b, Code):
        return f"<details><summary>{b.summary}</summary>\n\n```json\n{b.text}\n```\n\n</details>"
    raise TypeError(f"unknown block {b!r}")


# --------------------------------------------------------------------------- entry point
def _check_out(out: Path, run: Run) -> None:
    """Refuse to replace a folder that is not a report (the run itself, or foreign data)."""
    res, root = out.resolve(), run.root.resolve()
    if res == root or root.is_relative_to(res):
        raise InputError(out, "the report folder cannot be the run folder or one above it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / "report.json").is_file():
            raise InputError(out, "exists and is not a realdeal report folder; choose another")


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Build the report of the run in ``run_dir``; return the path of ``report.html``.

    Reads ``RUN/run.json`` (format ``realdeal-run``) and the inputs it names; writes
    ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png`` into ``out``
    (default ``RUN/report``), replacing an earlier report there atomically. Sections whose
    inputs are missing become one-line notes. A missing or invalid ``run.json`` raises
    :class:`~realdeal.errors.InputError`.
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.root / "report"
    _check_out(out, run)
    built = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    title = f"RealDeal report — {run.root.resolve().name}"
    m = run.manifest
    intro: list[Block] = [
        Para(
            f"Run folder: {run.root.resolve()} · preset: {m.get('preset', MISSING)} · "
            f"run started: {m.get('created', MISSING)} · finished: {m.get('finished', MISSING)}"
            f" · report built: {built}"
        )
    ]
    with atomic_dir(out, overwrite=True) as tmp:
        ctx = _Context(run, tmp)
        rendered: list[tuple[str, str, list[Block]]] = []
        status = []
        for anchor, heading, fn in SECTIONS:
            try:
                blocks = fn(ctx)
                status.append({"id": anchor, "title": heading, "status": "ok", "note": None})
            except (_Skip, RealDealError, OSError) as e:
                reason = str(e) if isinstance(e, _Skip) else f"could not read its inputs ({e})"
                log.warning("report section %r skipped: %s", heading, reason)
                blocks = [Note(f"Skipped: {reason}.")]
                status.append({"id": anchor, "title": heading, "status": "skipped", "note": reason})
            rendered.append((anchor, heading, blocks))
        write_text_atomic(tmp / "report.html", render_html(title, intro, rendered))
        write_text_atomic(tmp / "report.md", render_markdown(title, intro, rendered))
        write_json_atomic(
            tmp / "report.json",
            {
                "format": REPORT_FORMAT,
                "version": 1,
                "run": str(run.root.resolve()),
                "built": built,
                "realdeal": __version__,
                "sections": status,
                "figures": [f for f in ctx.figure_files if (tmp / f).is_file()],
                "comparison": ctx.comparison,
            },
        )
    log.info("report written to %s", out / "report.html")
    return out / "report.html"
