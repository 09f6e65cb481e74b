"""The paired and unpaired metric suites over sets of subjects (paper §3.2, Tables 1–6).

**Paired** (originals vs candidate sets such as ``recon`` and ``refined``, with FreeSurfer
label maps, or without them automatic labels of each original from
:mod:`realdeal.data.segment`, written to ``out_dir/labels/``): per subject and candidate —
LPIPS per axis (real AlexNet weights only), HOG texture distance per axis in the whole brain
and the cerebellum, noise KL in white matter and lateral ventricles, sharpness (also of the
original), PSNR/SSIM in the brain and, once the refiner registers it, the seam score.
Per-subject values are summarised by mean and bootstrap CI over subjects.

**Unpaired** (real vs generated sets, no correspondence): 2D patches per axis from every
image, features (FID's Inception, or the weight-free patch-stats space under its own names),
then per axis Fréchet distance and precision/recall/density/coverage for k = 5, 10, 20. The
``original`` row compares the real set with an independent second draw of patch positions
from the same real images. CIs: jackknife over the generated set's subjects
(:func:`realdeal.metrics.tables.jackknife_ci`): each subject is left out in turn and the
interval is the estimate ± t·SE. A bootstrap would resample subjects with replacement and so
duplicate patches, which biases FD upward and PRDC (duplicates shrink k-NN radii); its
intervals excluded their own estimate (original FD 0.00816 [0.0194, 0.158]).

Randomness: each subject's patch positions come from ``SeedSequence([seed, crc32(id)])``, so
results do not depend on worker count or order. Subjects run in a process pool
(``workers``; 1 = in this process).

Under ``torchrun`` (``dist`` from :func:`realdeal.runtime.distributed.inference_group`, one
node or several) the ranks split the subjects (:func:`~realdeal.runtime.distributed.shard`),
each computes the per-subject values or features of its share, and rank 0 gathers them in
input order and computes the tables exactly as one process does; the other ranks get ``None``
and write nothing but the automatic label maps of their own subjects. A volume's values
depend only on the volume, the seed and the settings (networks see one volume's patches at a
time), so the tables equal a single process's bit for bit.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import re
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from realdeal.config import to_dict
from realdeal.data.labels import region_mask
from realdeal.data.segment import SegmentConfig, auto_labels, source_note
from realdeal.errors import ConfigError, RealDealError
from realdeal.metrics import tables as T
from realdeal.metrics.fid import frechet_distance_features
from realdeal.metrics.noise import NoiseConfig, kl_divergence, noise_histogram, noise_residual
from realdeal.metrics.paired import psnr_in_mask, ssim_in_mask
from realdeal.metrics.patches import (
    AXES,
    AXIS_NAMES,
    extract_patches_2d,
    sample_all_axes_2d,
    sample_patches_3d,
)
from realdeal.metrics.patchstats import patch_stats_features
from realdeal.metrics.prdc import knn_radii, prdc_multi
from realdeal.metrics.seam import seam_function
from realdeal.metrics.sharpness import SharpnessConfig, laplacian, laplacian_variance_at
from realdeal.metrics.subjects import SubjectSet, check_paired, load_image_on_grid, load_labels
from realdeal.metrics.texture import (
    HogConfig,
    hog_descriptors,
    hog_distance_from_descriptors,
    region_box,
)
from realdeal.runtime.distributed import (
    DistInfo,
    Failure,
    broadcast_error,
    check_same,
    check_shared_folder,
    gather_shards,
    main_first,
    shard,
)
from realdeal.utils.fs import write_json_atomic, write_text_atomic
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)

NOISE_REGIONS = ("white_matter", "lateral_ventricles")
HOG_REGIONS = ("brain", "cerebellum")


LPIPS_MIN_PATCH = 31
"""The smallest 2D patch side LPIPS's AlexNet takes (its fifth convolution needs a 1-pixel map)."""


@dataclasses.dataclass(frozen=True)
class PairedConfig:
    """Settings of the paired suite; defaults are the paper's."""

    patch_size_2d: int = 64
    n_patches_2d: int = 1000
    min_brain_fraction: float = 0.5
    sharpness: SharpnessConfig = SharpnessConfig()
    noise: NoiseConfig = NoiseConfig()
    hog: HogConfig = HogConfig()
    lpips: bool = True
    psnr_ssim: bool = True
    seed: int = 0
    n_bootstrap: int = 1000
    ci: float = 0.95
    seam_window: int | None = None
    """Window side of the refiner whose seams the seam score looks for; ``None``: the score's
    own default (64 when every side is ≥ 192, else 32). Only for the built-in seam score."""
    segment: SegmentConfig = SegmentConfig()
    """Automatic labels, used when no label maps are given."""


@dataclasses.dataclass(frozen=True)
class UnpairedConfig:
    """Settings of the unpaired suite; defaults are the paper's (Inception features, k = 5/10/20)."""

    patch_size_2d: int = 64
    n_patches_2d: int = 1000
    min_brain_fraction: float = 0.5
    foreground_threshold: float = -0.9
    features: Literal["inception", "patchstats"] = "inception"
    ks: tuple[int, ...] = (5, 10, 20)
    seed: int = 0
    n_bootstrap: int = 20
    """Leave-one-subject-out sets for the jackknife intervals: all subjects when the set has at
    most this many, else this many chosen at random (seeded); 0 = no intervals. (The name is
    kept from the earlier bootstrap, so configs stay valid.)"""
    ci: float = 0.95


#: Range of each set-level metric (by prefix), to clip intervals to.
_METRIC_BOUNDS = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "coverage": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class NetworkOptions:
    """Where pretrained weights come from and where networks run."""

    weights_dir: str | None = None
    allow_download: bool = True
    device: str = "cpu"


@dataclasses.dataclass
class EvaluationResult:
    """Records, summary, tables and timings of one evaluation."""

    mode: str
    config: dict[str, Any]
    sets: list[str]
    records: list[dict]
    summary: list[dict]
    markdown: str
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``tables.md``, ``summary.csv``, ``per_subject.csv`` and ``results.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "markdown": out / "tables.md",
            "summary_csv": out / "summary.csv",
            "per_subject_csv": out / "per_subject.csv",
            "json": out / "results.json",
        }
        write_text_atomic(files["markdown"], self.markdown)
        T.write_csv(files["summary_csv"], self.summary, T.SUMMARY_COLUMNS)
        T.write_csv(files["per_subject_csv"], self.records, T.RECORD_COLUMNS)
        write_json_atomic(files["json"], _json_safe(dataclasses.asdict(self)))
        return files


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def subject_seeds(seed: int, subject_id: str, n: int = 2) -> list[np.random.Generator]:
    """``n`` independent generators for one subject, independent of processing order."""
    ss = np.random.SeedSequence([seed, zlib.crc32(subject_id.encode())])
    return [np.random.default_rng(s) for s in ss.spawn(n)]


@contextlib.contextmanager
def _timed(timings: dict[str, float] | None, key: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t


def _rec(subject: str, set_name: str, metric: str, axis: str, value: float) -> dict:
    return {
        "subject": subject,
        "set": set_name,
        "metric": metric,
        "axis": axis,
        "value": float(value),
    }


@dataclasses.dataclass(frozen=True)
class _Regions:
    """One subject's regions for the paired metrics, from its FreeSurfer-coded labels."""

    brain: np.ndarray
    masks: dict[str, np.ndarray]
    noise: list[str]  # noise-KL regions with voxels
    hog: list[str]  # HOG regions with voxels (the brain always)
    noise_mask: np.ndarray  # where the noise residual is computed
    boxes: dict[str, tuple[slice, ...]]  # HOG bounding box of each HOG region

    @classmethod
    def of(cls, labels: np.ndarray, brain: np.ndarray) -> _Regions:
        masks = {r: region_mask(labels, r) for r in (*NOISE_REGIONS, "cerebellum")}
        hog = [r for r in HOG_REGIONS if r == "brain" or masks[r].any()]
        return cls(
            brain=brain,
            masks=masks,
            noise=[r for r in NOISE_REGIONS if masks[r].any()],
            hog=hog,
            noise_mask=masks["white_matter"] | masks["lateral_ventricles"],
            boxes={r: region_box(brain if r == "brain" else masks[r]) for r in hog},
        )


def paired_subject(
    subject_id: str,
    original: np.ndarray,
    labels: np.ndarray,
    candidates: dict[str, np.ndarray],
    config: PairedConfig = PairedConfig(),
    lpips_model=None,
    timings: dict[str, float] | None = None,
    threads: int = 1,
) -> list[dict]:
    """All paired metrics of one subject: ``original``/``candidates`` ``(X, Y, Z)`` in [-1, 1].

    ``labels`` are FreeSurfer codes on the same grid; a region without voxels (possible only
    with automatic labels) leaves out the metrics that need it. LPIPS is computed only when
    ``config.lpips`` and a loaded ``lpips_model`` (:func:`realdeal.metrics.lpips.load_lpips`)
    are given. Returns records (see :mod:`realdeal.metrics.tables`); ``timings`` accumulates
    seconds per metric.
    """
    rng2d, rng3d = subject_seeds(config.seed, subject_id)
    brain = region_mask(labels, "brain")
    seam = seam_function(config.seam_window)
    use_lpips = config.lpips and lpips_model is not None
    with _timed(timings, "sampling"):
        pos2d = (
            sample_all_axes_2d(
                brain,
                config.patch_size_2d,
                config.n_patches_2d,
                rng2d,
                config.min_brain_fraction,
            )
            if use_lpips
            else {}
        )
        sc = config.sharpness
        corners = sample_patches_3d(
            brain, sc.patch_size, sc.n_patches, rng3d, config.min_brain_fraction
        )
    regions = _Regions.of(labels, brain)  # after sampling: an empty brain fails there first

    def measure(img: np.ndarray) -> dict[str, Any]:
        return _image_measures(img, regions, corners, config, seam, timings, threads)

    ref = measure(original)
    out = [_rec(subject_id, T.ORIGINAL, "sharpness", "", ref["sharpness"])]
    if "seam" in ref:
        out.append(_rec(subject_id, T.ORIGINAL, "seam", "", ref["seam"]))
    for name, cand in candidates.items():
        d = measure(cand)
        if use_lpips:
            with _timed(timings, "lpips"):
                for a in AXES:
                    pa = extract_patches_2d(original, a, pos2d[a], config.patch_size_2d)
                    pb = extract_patches_2d(cand, a, pos2d[a], config.patch_size_2d)
                    out.append(
                        _rec(subject_id, name, "lpips", AXIS_NAMES[a], lpips_model(pa, pb).mean())
                    )
        out += _compared_records(subject_id, name, original, cand, ref, d, regions, config, timings)
    return out


def _image_measures(
    img: np.ndarray,
    regions: _Regions,
    corners: np.ndarray,
    config: PairedConfig,
    seam: Any,
    timings: dict[str, float] | None,
    threads: int,
) -> dict[str, Any]:
    """What the paired metrics need of one image: sharpness, noise histograms per region,
    HOG descriptors per region and axis, and the seam score (when one is registered)."""
    sc = config.sharpness
    d: dict[str, Any] = {}
    with _timed(timings, "sharpness"):
        d["sharpness"] = float(
            laplacian_variance_at(laplacian(img, sc.sigma), corners, sc.patch_size).mean()
        )
    with _timed(timings, "noise_kl"):
        noise = noise_residual(img, regions.noise_mask, config.noise, threads)
        d["hist"] = {
            r: noise_histogram(noise, regions.masks[r], config.noise) for r in regions.noise
        }
    with _timed(timings, "hog"):
        d["hog"] = {r: hog_descriptors(img, regions.boxes[r], config.hog) for r in regions.hog}
    if seam is not None:
        with _timed(timings, "seam"):
            d["seam"] = float(seam(img, regions.brain))
    return d


def _compared_records(
    subject_id: str,
    name: str,
    original: np.ndarray,
    cand: np.ndarray,
    ref: dict[str, Any],
    d: dict[str, Any],
    regions: _Regions,
    config: PairedConfig,
    timings: dict[str, float] | None,
) -> list[dict]:
    """Records of candidate ``name`` against the original, from both images' measures (HOG
    distance, noise KL, sharpness, PSNR/SSIM, seam); LPIPS aside."""
    out = []
    with _timed(timings, "hog"):
        for r in regions.hog:
            for a in AXES:
                dist = hog_distance_from_descriptors(ref["hog"][r][a], d["hog"][r][a])
                out.append(_rec(subject_id, name, f"hog_{r}", AXIS_NAMES[a], dist))
    for r in regions.noise:
        out.append(
            _rec(subject_id, name, f"kl_{r}", "", kl_divergence(ref["hist"][r], d["hist"][r]))
        )
    out.append(_rec(subject_id, name, "sharpness", "", d["sharpness"]))
    if config.psnr_ssim:
        with _timed(timings, "psnr_ssim"):
            out.append(
                _rec(subject_id, name, "psnr", "", psnr_in_mask(original, cand, regions.brain))
            )
            out.append(
                _rec(subject_id, name, "ssim", "", ssim_in_mask(original, cand, regions.brain))
            )
    if "seam" in d:
        out.append(_rec(subject_id, name, "seam", "", d["seam"]))
    return out


# ---------------------------------------------------------------- worker plumbing
_WORKER: dict[str, Any] = {}


def _init_worker(models: dict[str, bool], network: NetworkOptions, threads: int | None) -> None:
    """Process-pool initializer: limit threads (unless ``None``), load the networks once."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    _WORKER["threads"] = threads or torch.get_num_threads()
    if models.get("lpips"):
        from realdeal.metrics.lpips import load_lpips

        _WORKER["lpips"] = load_lpips(network.weights_dir, False, network.device)
    if models.get("inception"):
        from realdeal.metrics.fid import load_fid_inception

        _WORKER["inception"] = load_fid_inception(network.weights_dir, False, network.device)


def _paired_task(
    subject_id: str,
    original: Path,
    labels: Path | None,
    cands: dict[str, Path],
    config: PairedConfig,
    labels_out: Path | None = None,
):
    """One subject's records, timings and skipped regions (``labels=None``: automatic labels,
    saved as ``labels_out/<id>.nii.gz`` when given)."""
    try:
        timings: dict[str, float] = {}
        skipped: dict[str, str] = {}
        with _timed(timings, "load"):
            orig = load_image_on_grid(original, None, "image")
            if labels is not None:
                lab = load_labels(labels, orig, ("brain", *NOISE_REGIONS, "cerebellum"))
            vols = {n: load_image_on_grid(p, orig, f"{n} image").data for n, p in cands.items()}
        if labels is None:
            with _timed(timings, "auto_labels"):
                auto = auto_labels(orig, config.segment, original)
                lab, skipped = auto.labels, auto.skipped
                if labels_out is not None:
                    orig.with_data(lab).save(labels_out / f"{subject_id}.nii.gz", np.int16)
        recs = paired_subject(
            subject_id,
            orig.data,
            lab,
            vols,
            config,
            _WORKER.get("lpips"),
            timings,
            _WORKER.get("threads", 1),
        )
        return recs, timings, skipped
    except RealDealError as e:
        return _failure(e)


def spawn_safe_main() -> bool:
    """Whether worker processes started with "spawn" can import the main module: an
    interactive session or ``python -c`` (nothing to re-run), or a script or ``-m`` module that guards its
    work with ``if __name__ == "__main__":``. Spawned workers import the main script again, so
    an unguarded one would start the evaluation again in every worker."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        return True
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return True
    return re.search(r"^if\s+__name__\s*==\s*['\"]__main__['\"]", source, re.M) is not None


def _run_tasks(
    fn,
    tasks: list[tuple],
    workers: int,
    init_args: tuple,
    desc: str,
    models: dict,
    dist: DistInfo | None = None,
) -> list | None:
    """Run ``fn(*task)`` for every task: results in task order, in a pool when ``workers > 1``.

    In this process the already loaded ``models`` are used; pool workers load their own. Under
    torchrun each rank runs its share of the tasks and rank 0 gets every result (the other
    ranks ``None``). A task's :class:`~realdeal.errors.RealDealError` is raised on every rank:
    the first in task order, as one process would raise it.
    """
    index = shard(range(len(tasks)), dist)
    mine = _run_local(fn, [tasks[i] for i in index], workers, init_args, desc, models)
    results = gather_shards(mine, len(tasks), dist)
    failed = None if results is None else next((r for r in results if _failed(r)), None)
    broadcast_error(None if failed is None else failed.error(), dist)
    return results


def _run_local(
    fn, tasks: list[tuple], workers: int, init_args: tuple, desc: str, models: dict
) -> list:
    """This process's tasks (see :func:`_run_tasks`); stops at the first failed one, leaving
    ``None`` for the tasks it did not reach and the :class:`Failure` in the failed one's place."""
    results: list[Any] = [None] * len(tasks)
    if workers > 1 and len(tasks) > 1 and not spawn_safe_main():
        log.warning(
            "%s: running in this process, not in %d worker processes: the calling script has no "
            "`if __name__ == \"__main__\":` guard, and each worker would run it again",
            desc, workers,
        )  # fmt: skip
        workers = 1
    bar = progress(total=len(tasks), desc=desc, unit="subject")
    try:
        if workers <= 1 or len(tasks) <= 1:
            saved = dict(_WORKER)
            _WORKER.update(models, threads=_WORKER.get("threads") or 1)
            try:
                for i, t in enumerate(tasks):
                    results[i] = fn(*t)
                    bar.update()
                    if _failed(results[i]):
                        break
            finally:
                _WORKER.clear()
                _WORKER.update(saved)
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=init_args
            ) as ex:
                futures = {ex.submit(fn, *t): i for i, t in enumerate(tasks)}
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
                    if _failed(results[futures[fut]]):
                        ex.shutdown(cancel_futures=True)
                        break
    finally:
        bar.close()
    return results


def _failure(e: RealDealError) -> Failure:
    """A task's error as plain data (:class:`~realdeal.runtime.distributed.Failure`): it
    crosses the process pool and the ranks, which ``InputError(path, problem)`` cannot."""
    return Failure.of(e)


def _failed(result: Any) -> bool:
    return isinstance(result, Failure)


def default_workers(dist: DistInfo | None = None) -> int:
    """``min(2, CPUs)``, both cores of the reference machine; under torchrun, the CPUs are this
    node's share per rank (its CPU count over the processes on the node)."""
    per_rank = (os.cpu_count() or 1) // (dist.local_world_size if dist is not None else 1)
    return max(1, min(2, per_rank))


def _threads(workers: int, dist: DistInfo | None) -> int:
    """Threads for each worker process: this rank's CPUs over its workers."""
    ranks = dist.local_world_size if dist is not None else 1
    return max(1, (os.cpu_count() or 1) // (workers * ranks))


# ---------------------------------------------------------------- paired suite
def labels_note(labels: SubjectSet | None, skipped: dict[str, dict[str, str]]) -> str:
    """Where the regions came from: given label maps, or automatic (with regions skipped and
    why; ``skipped`` = subject → region → reason)."""
    if labels is not None:
        where = labels.source if len(labels.source) <= 80 else f"{len(labels)} files"
        return f"labels: FreeSurfer maps from --labels ({where})"
    reasons: dict[str, dict[str, int]] = {}
    for per_subject in skipped.values():
        for region, why in per_subject.items():
            reasons.setdefault(region, {}).setdefault(why, 0)
            reasons[region][why] += 1
    n = len(skipped)
    return source_note(
        {
            region: "; ".join(f"{why} ({k}/{n} subjects)" for why, k in whys.items())
            for region, whys in reasons.items()
        }
    )


def evaluate_paired(
    originals: SubjectSet,
    candidates: Sequence[SubjectSet],
    labels: SubjectSet | None,
    config: PairedConfig = PairedConfig(),
    network: NetworkOptions = NetworkOptions(),
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    dist: DistInfo | None = None,
) -> EvaluationResult | None:
    """Paired suite over subjects: every candidate set against the originals (see module doc).

    ``labels=None`` derives each original's labels automatically (:mod:`realdeal.data.segment`).
    With ``out_dir``, the tables, CSVs and JSON are written there (:meth:`EvaluationResult.write`),
    and automatic labels to ``out_dir/labels/``. Under torchrun (``dist``) the ranks split the
    subjects; rank 0 returns (and writes) the result, the other ranks return ``None``.
    """
    if not candidates:
        raise ConfigError("paired evaluation needs at least one candidate set")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names) or T.ORIGINAL in names:
        raise ConfigError(f"candidate set names must be distinct and not {T.ORIGINAL!r}: {names}")
    sets = (originals, *([labels] if labels is not None else []), *candidates)
    check_same([(s.name, s.ids) for s in sets], dist, "the subjects of the sets")
    for s in sets[1:]:
        check_paired(originals, s)
    models = {}
    if config.lpips and config.patch_size_2d < LPIPS_MIN_PATCH:
        raise ConfigError(
            f"LPIPS (AlexNet) needs 2D patches of at least {LPIPS_MIN_PATCH} voxels, got "
            f"{config.patch_size_2d} (--patch-size); give larger patches or skip LPIPS "
            "(--no-lpips)"
        )
    if config.lpips:  # load here first: fail fast if the weights cannot be had (or download them)
        from realdeal.metrics.lpips import load_lpips

        models["lpips"] = main_first(
            lambda: load_lpips(network.weights_dir, network.allow_download, network.device), dist
        )
    workers = workers or default_workers(dist)
    labels_out = None
    if labels is None and out_dir is not None:
        labels_out = Path(out_dir) / "labels"
        if dist is None or dist.is_main:
            labels_out.mkdir(parents=True, exist_ok=True)
        check_shared_folder(labels_out, dist)  # each rank writes its own subjects' labels there
    tasks = _paired_tasks(originals, candidates, labels, config, labels_out)
    t0 = time.perf_counter()
    init = ({"lpips": config.lpips}, network, _threads(workers, dist))
    results = _run_tasks(_paired_task, tasks, workers, init, "paired metrics", models, dist)
    if results is None:
        return None  # rank 0 writes the tables
    records = [r for recs, _, _ in results for r in recs]
    timings = _summed_timings(tm for _, tm, _ in results)
    skipped = {sid: sk for sid, (_, _, sk) in zip(originals.ids, results, strict=True) if sk}
    note = labels_note(labels, {sid: skipped.get(sid, {}) for sid in originals.ids})
    timings["wall"] = time.perf_counter() - t0  # the per-subject metrics, over all ranks
    t1 = time.perf_counter()
    summary = T.summarize(records, config.n_bootstrap, config.ci, config.seed)
    timings["tables"] = time.perf_counter() - t1
    result = EvaluationResult(
        mode="paired",
        config={
            "paired": to_dict(config),
            "workers": workers,
            "processes": dist.world_size if dist is not None else 1,
            "subjects": originals.ids,
            "sets": {s.name: s.source for s in sets},
            "labels": "given" if labels is not None else "automatic",
            "labels_source": labels.source if labels is not None else str(labels_out or ""),
            "labels_note": note,
            "labels_skipped": skipped,
        },
        sets=names,
        records=records,
        summary=summary,
        markdown=T.paired_markdown(summary, names, note, config.n_bootstrap, config.ci),
        timings=timings,
    )
    if out_dir is not None:
        result.write(out_dir)
    return result


def _paired_tasks(
    originals: SubjectSet,
    candidates: Sequence[SubjectSet],
    labels: SubjectSet | None,
    config: PairedConfig,
    labels_out: Path | None,
) -> list[tuple]:
    """The arguments of :func:`_paired_task` for every subject, in the originals' order."""
    return [
        (
            sid,
            originals.paths[sid],
            None if labels is None else labels.paths[sid],
            {c.name: c.paths[sid] for c in candidates},
            config,
            labels_out,
        )
        for sid in originals.ids
    ]


def _summed_timings(per_subject: Iterable[dict[str, float]]) -> dict[str, float]:
    """Seconds per metric, summed over subjects."""
    timings: dict[str, float] = {}
    for tm in per_subject:
        for k, v in tm.items():
            timings[k] = timings.get(k, 0.0) + v
    return timings


# ---------------------------------------------------------------- unpaired suite
def patch_features(
    image: np.ndarray,
    mask: np.ndarray,
    config: UnpairedConfig,
    rng: np.random.Generator,
    extractor=None,
) -> dict[int, np.ndarray]:
    """``{axis: (n_patches, F) float32}`` features of in-brain 2D patches of one image.

    ``extractor`` maps ``(N, H, W)`` patches to features (FID's Inception); ``None`` = patch-stats.
    """

    pos = sample_all_axes_2d(
        mask, config.patch_size_2d, config.n_patches_2d, rng, config.min_brain_fraction
    )
    out = {}
    for a in AXES:
        patches = extract_patches_2d(image, a, pos[a], config.patch_size_2d)
        f = patch_stats_features(patches) if extractor is None else extractor(patches)
        out[a] = np.asarray(f, dtype=np.float32)
    return out


def _unpaired_task(
    subject_id: str, image: Path, labels: Path | None, config: UnpairedConfig, draw: int
):
    try:
        vol = load_image_on_grid(image, None, "image")
        if labels is not None:
            mask = region_mask(load_labels(labels, vol, ("brain",)), "brain")
        else:
            mask = vol.data > config.foreground_threshold
        rng = subject_seeds(config.seed, subject_id, 2)[draw]
        return patch_features(vol.data, mask, config, rng, _WORKER.get("inception")), {}
    except RealDealError as e:
        return _failure(e)


def _set_level(
    real: dict[int, np.ndarray],
    fake: list[dict[int, np.ndarray]],
    config: UnpairedConfig,
    rng: np.random.Generator,
    set_name: str,
) -> list[dict]:
    """FD and PRDC per axis with jackknife CIs over ``fake``'s subjects (module doc)."""
    suffix = "" if config.features == "inception" else "_patchstats"
    fd_name = "fid" if config.features == "inception" else "fd_patchstats"
    rows = []
    n = len(fake)
    n_sets = min(n, config.n_bootstrap) if n > 1 else 0
    left_out = range(n) if n_sets == n else sorted(rng.choice(n, n_sets, replace=False))
    subsets = [[i for i in range(n) if i != j] for j in left_out] if n_sets else []
    k_max = max(config.ks)
    for a in AXES:
        counts = {"the real set": len(real[a]), set_name: sum(len(f[a]) for f in fake)}
        if short := [f"{name} has {c}" for name, c in counts.items() if c <= k_max]:
            raise ConfigError(
                f"coverage and density with k = {k_max} need more than {k_max} patches a set "
                f"and axis, but {' and '.join(short)} on axis {a}: give more subjects or "
                "more patches (--patches)"
            )
    # a set without one subject needs more patches than the largest k (prdc's k-NN radii)
    if any(sum(len(fake[i][a]) for i in b) <= max(config.ks) for b in subsets for a in AXES):
        log.warning(
            "%s: too few patches without one subject for k = %d; no intervals",
            set_name,
            max(config.ks),
        )
        subsets = []
    for a in AXES:
        radii = knn_radii(real[a], config.ks)  # shared by the point estimate and every draw

        def metrics(idx: Sequence[int], a: int = a, radii=radii) -> dict[str, float]:
            f = np.concatenate([fake[i][a] for i in idx])
            vals = {fd_name: frechet_distance_features(real[a], f)}
            for k, d in prdc_multi(real[a], f, config.ks, real_radii=radii).items():
                for m, v in d.items():
                    vals[f"{m}_k{k}{suffix}"] = v
            return vals

        point = metrics(range(n))
        draws = [metrics(b) for b in subsets]
        for m, v in point.items():
            bounds = _METRIC_BOUNDS.get(m.split("_")[0], (0.0, np.inf))
            lo, hi = T.jackknife_ci(v, [d[m] for d in draws], n, config.ci, bounds)
            rows.append(
                {
                    "set": set_name,
                    "metric": m,
                    "axis": AXIS_NAMES[a],
                    "mean": v,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": n,
                }
            )
    return rows


def evaluate_unpaired(
    real: SubjectSet,
    generated: Sequence[SubjectSet],
    config: UnpairedConfig = UnpairedConfig(),
    real_labels: SubjectSet | None = None,
    network: NetworkOptions = NetworkOptions(),
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    dist: DistInfo | None = None,
) -> EvaluationResult | None:
    """Unpaired suite: each generated set vs the real set, plus real vs real (module doc).

    With ``out_dir``, the tables, CSVs and JSON are written there. Under torchrun (``dist``)
    the ranks split the feature extraction (every volume and draw); rank 0 returns (and
    writes) the result, the other ranks return ``None``.
    """
    if not generated:
        raise ConfigError("unpaired evaluation needs at least one generated set")
    if min(len(real), *(len(g) for g in generated)) < 1:
        raise ConfigError("every set needs at least one subject")
    sets = (real, *([real_labels] if real_labels is not None else []), *generated)
    check_same([(s.name, s.ids) for s in sets], dist, "the subjects of the sets")
    if real_labels is not None:
        check_paired(real, real_labels)
    models = {}
    if config.features == "inception":  # load here first: fail fast if the weights cannot be had
        from realdeal.metrics.fid import load_fid_inception

        models["inception"] = main_first(
            lambda: load_fid_inception(network.weights_dir, network.allow_download, network.device),
            dist,
        )
    workers = workers or default_workers(dist)
    init = ({"inception": config.features == "inception"}, network, _threads(workers, dist))
    t0 = time.perf_counter()
    # one list of feature tasks: the real set twice (two draws of patch positions), then each
    # generated set; every task is one volume, whichever process or rank runs it
    parts = [(real, real_labels, 0), (real, real_labels, 1), *((g, None, 0) for g in generated)]
    tasks = [
        (sid, s.paths[sid], None if labels is None else labels.paths[sid], config, draw)
        for s, labels, draw in parts
        for sid in s.ids
    ]
    results = _run_tasks(_unpaired_task, tasks, workers, init, "patch features", models, dist)
    features_s = time.perf_counter() - t0
    if results is None:
        return None  # rank 0 computes and writes the tables
    feats, start = [], 0
    for s, _, _ in parts:
        feats.append([f for f, _ in results[start : start + len(s)]])
        start += len(s)
    real_a, real_b, gen = feats[0], feats[1], feats[2:]
    real_cat = {a: np.concatenate([f[a] for f in real_a]) for a in AXES}
    rng = np.random.default_rng(config.seed)
    summary: list[dict] = []
    for g, fake in zip(generated, gen, strict=True):
        summary += _set_level(real_cat, fake, config, rng, g.name)
    summary += _set_level(real_cat, real_b, config, rng, T.ORIGINAL)
    names = [g.name for g in generated]
    fd_name = "fid" if config.features == "inception" else "fd_patchstats"
    suffix = "" if config.features == "inception" else "_patchstats"
    result = EvaluationResult(
        mode="unpaired",
        config={
            "unpaired": to_dict(config),
            "workers": workers,
            "processes": dist.world_size if dist is not None else 1,
            "sets": {s.name: s.source for s in (real, *generated)},
        },
        sets=names,
        records=[],
        summary=summary,
        markdown=T.unpaired_markdown(summary, names, fd_name, suffix, config.ks, config.ci),
        timings={"features": features_s, "wall": time.perf_counter() - t0},
    )
    if out_dir is not None:
        result.write(out_dir)
    return result
