"""``realdeal demo``: the whole method on the built-in cohort, end to end, into one run folder.

Stages (each timed, logged and shown with a progress bar; each reuses what an earlier run
left in the folder, so an interrupted demo continues where it stopped):

1. build the synthetic cohort (Colin27/MNI152-seeded, :mod:`realdeal.data.cohort`);
2. prepare it (``data/``: [-1, 1] images, labels, masks, brain-fraction maps, split);
3. the three models with the ``cpu-small`` preset — autoencoder → reconstructions of every
   subject → LDM → refiner. Without ``--retrain`` the demo uses, in this order, the
   checkpoints already in ``models/``, then the demo checkpoints shipped inside the package
   (made by ``realdeal demo --retrain --train-scale K --export-checkpoints DIR``, see
   :func:`export_checkpoints`) when they were trained on this very cohort, and trains
   otherwise;
4. refine the held-out subjects' reconstructions (``refined/test``);
5. sample 16 LDM volumes (``samples/raw``, as many as real subjects) and refine the first 3
   (``samples/refined``; refinement is the demo's costliest stage);
6. evaluate: paired (held-out originals vs reconstruction and refined; ``eval/paired``) and
   unpaired (all real subjects vs all raw samples, the raw samples that were refined, and
   their refined versions; weight-free patch-statistics features; ``eval/unpaired``).
   Coverage and density grow with the number of generated volumes (on the demo cohort the
   autoencoder's reconstructions of 16 subjects cover 0.65–0.70 of the real patches at k = 10,
   of 3 subjects 0.27–0.30), so refined samples are compared with the same raw ones; and
   memorisation (each raw sample's similarity to its nearest training reconstruction, against
   the held-out subjects'; ``eval/memorization``), which coverage cannot see;
7. write ``run.json`` and the report (``report/report.html``, ``report.md``).

``--quick`` makes everything tiny (4 subjects at 4 mm, a few training steps) for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from realdeal.config import from_dict, to_dict
from realdeal.data.cohort import CohortConfig, build_cohort
from realdeal.data.dataset import PrepareConfig, PreparedDataset, prepare_dataset
from realdeal.diffusion.registry import DEFAULT_SAMPLING
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.metrics import suite
from realdeal.metrics.memorization import evaluate_memorization
from realdeal.metrics.sharpness import SharpnessConfig
from realdeal.metrics.subjects import find_set
from realdeal.models.loading import load_autoencoder
from realdeal.pipelines.autoencoder import checkpoint_fingerprint, reconstruct_dataset
from realdeal.pipelines.ldm import LatentDiffusionPipeline, save_samples
from realdeal.pipelines.refiner import RefineSettings, refine_paths
from realdeal.presets import QUICK_OVERRIDES, preset, with_overrides
from realdeal.report.figures import cohort_figure
from realdeal.report.run import RUN_FORMAT, load_run, read_metrics_jsonl
from realdeal.runtime.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    save_checkpoint_safetensors,
)
from realdeal.runtime.device import resolve_device
from realdeal.training.autoencoder import train_autoencoder
from realdeal.training.distill import ROUNDS_DIR
from realdeal.training.engine import SNAPSHOTS_DIR
from realdeal.training.ldm import train_ldm
from realdeal.training.refiner import train_refiner
from realdeal.utils.fs import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)

MODEL_KINDS = ("autoencoder", "ldm", "refiner")
STUDENT = "refiner-student"
"""The refiner's few-step student (``realdeal train refiner-student``), shipped beside the
three models as ``refiner-student.pt``: a refiner checkpoint, optional in a folder."""
CEILING_SET = "unseen reconstructions"
"""The unpaired set that bounds what decoded samples can reach (:data:`HELD_OUT_ROLES`)."""
CEILING_DIR = "unseen-reconstructions"
PROVENANCE = "provenance.json"
"""Written beside each model's checkpoint in a demo run: where the model came from."""
PACKAGED = "packaged"
"""``checkpoints`` value: use the demo checkpoints shipped in ``realdeal/demo_checkpoints``."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What ``realdeal demo`` does. Every field but ``sample_batch`` and ``sample_sampler`` is
    a flag of the command, the first paragraph of its docstring the flag's help.

    Sampling defaults come from :data:`realdeal.diffusion.registry.DEFAULT_SAMPLING`: the LDM's
    row for samples, the residual refiner's for refinement (DDIM, η = 1, 10 quadratically
    spaced steps, analytic variance; the measurements behind it are there): a deterministic
    solver keeps all of a small model's high-frequency error, the stochastic one lets it be
    denoised.
    """

    quick: bool = False
    """Tiny everything, trains from scratch."""
    seed: int = 0
    """Random seed."""
    retrain: bool = False
    """Train all three models here instead of using existing or shipped checkpoints (earlier
    models are kept in models/<kind>.previous)."""
    train_scale: float = 1.0
    """Multiply every model's cpu-small training steps by K when training."""
    checkpoints: str | None = PACKAGED
    """Demo checkpoint folder; ``packaged``: the ones shipped with the package (when they fit
    this cohort); ``none``: always train.

    A folder holds ``autoencoder.pt``, ``ldm.pt`` and ``refiner.pt``. In Python, ``None``
    always trains (the command line's ``none``)."""
    n_samples: int = 16
    """LDM samples to draw."""
    n_refined_samples: int = 3
    """How many of the samples to refine (the first ones)."""
    sample_batch: int = 8
    """LDM samples drawn together."""
    sample_sampler: str = DEFAULT_SAMPLING["ldm"].sampler
    """The LDM's sampler."""
    sample_steps: int = DEFAULT_SAMPLING["ldm"].steps  # type: ignore[assignment]
    """LDM sampling steps (with ``sample_sampler``)."""
    refine_sampler: str = DEFAULT_SAMPLING["residual"].sampler
    """Refinement sampler."""
    refine_steps: int = DEFAULT_SAMPLING["residual"].steps  # type: ignore[assignment]
    """Refinement steps."""
    refine_eta: float = DEFAULT_SAMPLING["residual"].eta
    """DDIM η for refinement (1 = DDPM-like)."""
    refine_spacing: str = DEFAULT_SAMPLING["residual"].spacing
    """Refinement timestep spacing: linear, or quadratic (denser toward t = 0)."""
    refine_variance: str = DEFAULT_SAMPLING["residual"].variance
    """Refinement DDIM step variance: fixed, or analytic."""
    refiner_student: bool = False
    """Refine with the refiner's few-step student shipped beside the demo checkpoints
    (``demo:refiner-student``: progressive distillation, its own sampler and steps) instead of
    the refiner; the other refine settings but precision then do not apply.

    It needs demo checkpoints that hold a student (not ``--retrain``, ``--checkpoints none``,
    or ``--quick`` without ``--checkpoints DIR``, which train the refiner here)."""
    refine_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """The refiner's arithmetic; ``auto``: bf16 on CUDA and on CPUs with native bf16, else
    fp32.

    See :func:`~realdeal.runtime.device.inference_precision`."""
    max_batch: int = 8
    """Windows per refiner batch."""
    workers: int | None = None
    """Evaluation worker processes (default: cores)."""
    device: str = "auto"
    """Where models train, sample and refine: ``auto`` (a CUDA GPU when present), ``cpu``,
    ``cuda`` or ``cuda:N``.

    The models also reconstruct there; the metrics run on the CPU."""

    def __post_init__(self) -> None:

        if self.train_scale <= 0:
            raise ConfigError(f"--train-scale must be positive, got {self.train_scale}")
        if self.n_samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.n_samples}")
        if not 1 <= self.n_refined_samples <= self.n_samples:
            raise ConfigError(
                f"--refined-samples must be between 1 and --samples ({self.n_samples}), "
                f"got {self.n_refined_samples}"
            )
        trains_here = self.retrain or self.checkpoints is None
        if self.refiner_student and (trains_here or (self.quick and self.checkpoints == PACKAGED)):
            flag = (
                "--retrain" if self.retrain else "--checkpoints none" if trains_here else "--quick"
            )
            raise ConfigError(
                f"--refiner-student refines with the student of the shipped refiner; {flag} "
                "trains the refiner here, and no student of it exists"
            )

    def effective(self) -> DemoConfig:
        """The settings actually used (``quick`` shrinks sampling and refinement)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self,
            n_samples=min(self.n_samples, 3),
            n_refined_samples=min(self.n_refined_samples, 2),
            sample_steps=min(self.sample_steps, 5),
            refine_steps=min(self.refine_steps, 3),
            checkpoints=None if self.checkpoints == PACKAGED else self.checkpoints,
        )


# --------------------------------------------------------------------------- configurations


POPULATION = {
    "n_subjects": 320,
    "scale": 0.1,
    "coarse_elastic_spacing_mm": 64.0,
    "coarse_elastic_magnitude_mm": (2.0, 5.0),
    "ventricle_scale": (0.8, 1.8),
}
"""The demo's population: 320 subjects at 2 mm (256 train, 64 held out), with head size, lobe
shape and ventricle size varying beyond the default cohort's, so that an LDM trained on the
training split learns a population rather than a few heads it can store (with 13 training
subjects it returned copies of them)."""

HELD_OUT_ROLES = {"paired": 3, "real": 16, "ceiling": 16}
"""How the demo uses the held-out subjects, in order: the first 3 are refined and scored
against their originals; the first 16 are the real set the samples are compared with; the next
16, reconstructed, are the ceiling (what decoded volumes of unseen heads reach against that real
set, at the same counts). The memorisation baseline is the reconstructions of all 32."""


def cohort_config(cfg: DemoConfig):
    """The cohort the demo builds: the one the demo checkpoints it uses were trained on (their
    manifest's), else :data:`POPULATION` (``--retrain``, ``--checkpoints none``); ``--quick``:
    4 subjects at 4 mm."""

    if cfg.quick:
        return CohortConfig(n_subjects=4, spacing=4.0, seed=cfg.seed)
    shipped = _shipped_data(cfg)
    if shipped is not None:
        return from_dict(CohortConfig, shipped["cohort"], "manifest.json cohort")
    return CohortConfig(seed=cfg.seed, **POPULATION)


def prepare_config(cfg: DemoConfig):
    """How the demo prepares the cohort: as the demo checkpoints' data was prepared (their
    manifest's), else on the cohort's grid with refiner window 32 (quick: 16)."""

    shipped = None if cfg.quick else _shipped_data(cfg)
    if shipped is not None:
        return from_dict(PrepareConfig, shipped["prepare"], "manifest.json prepare")
    return PrepareConfig(
        shape=cohort_config(cfg).grid_shape(), window=16 if cfg.quick else 32, seed=cfg.seed
    )


def _shipped_data(cfg: DemoConfig) -> dict[str, Any] | None:
    """The ``cohort`` and ``prepare`` records of the demo checkpoints this run would use, or
    None (no such checkpoints, or a manifest without them: the demo then trains)."""
    if cfg.retrain or cfg.checkpoints is None:
        return None
    folder = packaged_checkpoints() if cfg.checkpoints == PACKAGED else Path(cfg.checkpoints)
    manifest = None if folder is None else folder / "manifest.json"
    if manifest is None or not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None  # _usable_checkpoints says what is wrong with it
    if not isinstance(meta.get("cohort"), dict) or not isinstance(meta.get("prepare"), dict):
        return None
    return {"cohort": meta["cohort"], "prepare": meta["prepare"]}


def held_out_roles(test: list[str]) -> dict[str, list[str]]:
    """The held-out subjects of each role (:data:`HELD_OUT_ROLES`); a small split gives the
    real set its first half (rounded up) and the ceiling the rest (one subject: no ceiling)."""
    n_paired, n_real, n_ceiling = (HELD_OUT_ROLES[k] for k in ("paired", "real", "ceiling"))
    real = test[: min(n_real, (len(test) + 1) // 2)]
    return {
        "paired": test[:n_paired],
        "real": real,
        "ceiling": test[len(real) : len(real) + n_ceiling],
    }


def model_configs(cfg: DemoConfig) -> dict[str, Any]:
    """The ``cpu-small`` run configs of the three models, scaled by ``train_scale``/quick."""

    out = {}
    for kind in MODEL_KINDS:
        c = preset(kind, "cpu-small")
        steps = max(1, round(c.train.steps * cfg.train_scale))
        c = with_overrides(c, {"train": {"steps": steps, "seed": cfg.seed, "device": cfg.device}})
        out[kind] = with_overrides(c, QUICK_OVERRIDES[kind]) if cfg.quick else c
    return out


# --------------------------------------------------------------------------- stage bookkeeping


class _Stages:
    """Numbered, timed stages with a log line each; timings go into ``run.json``."""

    def __init__(self, total: int):
        self.total, self.n, self.timings = total, 0, {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.n += 1
        log.info("[%d/%d] %s", self.n, self.total, name)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        log.info("[%d/%d] %s: %.1f s", self.n, self.total, name, self.timings[name])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _trained_steps(path: Path) -> int | None:
    """The step a checkpoint holds, or None if unreadable."""

    try:
        return load_checkpoint(path).step
    except InputError:
        return None


# --------------------------------------------------------------------------- shipped checkpoints


def packaged_checkpoints() -> Path | None:
    """The folder of demo checkpoints shipped inside the package, if it holds a manifest."""
    folder = Path(str(resources.files("realdeal"))) / "demo_checkpoints"
    return folder if (folder / "manifest.json").is_file() else None


def _usable_checkpoints(cfg: DemoConfig, folder: Path) -> dict[str, Path] | None:
    """``{kind: file}`` from ``folder`` if its manifest says they were trained on this cohort."""

    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise InputError(folder, "holds no manifest.json (not a demo checkpoint folder)")
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(manifest, f"unreadable manifest: {e}") from e
    want = {"cohort": to_dict(cohort_config(cfg)), "prepare": to_dict(prepare_config(cfg))}
    if _data_record(want) != _data_record(
        {"cohort": meta.get("cohort"), "prepare": meta.get("prepare")}
    ):
        log.info("demo checkpoints in %s were trained on another cohort; training instead", folder)
        return None
    files = {k: folder / f"{k}.pt" for k in MODEL_KINDS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(folder, f"is missing {', '.join(missing)}")
    for kind, f in files.items():
        want_sha = meta.get("sha256", {}).get(kind)
        if want_sha and _sha256(f) != want_sha:
            raise InputError(f, "does not match the sha256 in manifest.json (corrupt download?)")
    return files


def _data_record(data: dict[str, Any]) -> dict[str, Any]:
    """A ``{"cohort", "prepare"}`` record as plain JSON, fields added since it was written
    filled with their defaults (which keep the behaviour of the cohort and preparation that
    wrote it), so that records of one cohort compare equal across versions."""
    out = data
    with contextlib.suppress(RealDealError, TypeError, ValueError, KeyError):
        out = {"cohort": to_dict(from_dict(CohortConfig, data["cohort"])),
               "prepare": to_dict(from_dict(PrepareConfig, data["prepare"]))}  # fmt: skip
    return json.loads(json.dumps(out))


def _install_checkpoint(src: Path, model_dir: Path, meta_dir: Path | None) -> None:
    """Copy a shipped checkpoint (and its training log/config, for the report) into the run."""
    model_dir.mkdir(parents=True, exist_ok=True)
    kind = src.stem
    for name, dst in (
        (f"{kind}.metrics.jsonl", "metrics.jsonl"),
        (f"{kind}.config.json", "config.json"),
    ):
        if meta_dir is not None and (meta_dir / name).is_file():
            shutil.copyfile(meta_dir / name, model_dir / dst)
    tmp = model_dir / "checkpoint.pt.part"
    shutil.copyfile(src, tmp)
    os.replace(tmp, model_dir / "checkpoint.pt")


def export_checkpoints(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write a demo run's three models as slim (EMA weights only) demo checkpoints into ``dest``.

    ``dest`` gets ``autoencoder.pt``, ``ldm.pt``, ``refiner.pt``, their training logs and
    configs and a ``manifest.json`` (cohort and prepare configs, and per model: steps, batch,
    device, training time, how it was made, the commit, sha256) — the folder
    ``realdeal demo --checkpoints DIR`` reads; ``src/realdeal/demo_checkpoints`` is the one
    shipped with the package. See :func:`export_models` for models trained outside a demo run.
    """

    run_dir = Path(run_dir)
    run = load_run(run_dir).manifest
    return export_models(
        {kind: run_dir / run["models"][kind] for kind in MODEL_KINDS},
        dest,
        cohort=run["config"]["cohort"],
        prepare=run["config"]["prepare"],
        made_by=run.get("command", "realdeal demo --retrain"),
    )


def export_models(
    models: dict[str, Path],
    dest: str | os.PathLike,
    *,
    cohort: dict[str, Any],
    prepare: dict[str, Any],
    made_by: str,
    trained_on: str | None = None,
) -> Path:
    """Slim demo checkpoints from training-run folders or from earlier demo checkpoints.

    ``models[kind]`` is either a training run folder (``checkpoint.pt``, ``config.json``,
    ``metrics.jsonl`` as ``realdeal train`` writes them; its EMA weights are exported) or a
    demo-checkpoint folder with a ``manifest.json`` (that kind's file, logs and record are
    carried over unchanged). ``trained_on`` names the device where the training logs do not
    (logs record it from this version on). The training time of a run is the sum of its logged
    windows (``log_every`` steps each), so pauses between resumed runs do not count.

    Each ``<kind>.pt`` gets a ``<kind>.safetensors`` beside it with the same weights and values
    (readable without pickle or realdeal; ``<kind>.model.json`` holds its metadata), made from
    that ``.pt`` file; the manifest records its sha256 as ``sha256_safetensors`` (per model and
    for all, beside the ``.pt`` files' ``sha256``).

    ``models`` may also hold :data:`STUDENT`: a student of the refiner (a ``realdeal train
    refiner-student`` run folder, one of its ``rounds/round-K.pt`` files, or a demo-checkpoint
    folder). It must have been distilled from the refiner exported beside it (the file the
    run read, or the one written here); its record adds the distillation (native steps,
    sampler, spacing, rounds) and ``refiner_sha256``, the sha256 of the refiner file shipped
    beside it.
    """
    import torch

    def write_safetensors(folder: Path, kind: str) -> str:
        """``<kind>.safetensors`` (and ``.model.json``) from ``<kind>.pt``; its sha256."""
        ckpt = load_checkpoint(folder / f"{kind}.pt", kind=_load_kind(kind))
        return _sha256(save_checkpoint_safetensors(folder / f"{kind}.safetensors", ckpt))

    dest = Path(dest)
    commit = _git_commit()
    with atomic_dir(
        dest, overwrite=True, marker=("manifest.json", "realdeal-demo-checkpoints")
    ) as tmp:
        records: dict[str, dict[str, Any]] = {}
        read: dict[str, str] = {}  # sha256 of the file each model was read from
        for kind in (*MODEL_KINDS, *([STUDENT] if models.get(STUDENT) else [])):
            src = Path(models[kind])
            if (src / "manifest.json").is_file():
                read[kind] = _sha256(src / f"{kind}.pt")
                records[kind] = _carry_over(kind, src, Path(tmp), cohort, prepare)
                records[kind]["sha256_safetensors"] = write_safetensors(Path(tmp), kind)
                continue
            ckpt_file, run_dir = _checkpoint_and_run(src)
            read[kind] = _sha256(ckpt_file)
            ckpt = load_checkpoint(ckpt_file, kind=_load_kind(kind))
            path = save_checkpoint(Path(tmp) / f"{kind}.pt", ckpt.slimmed())
            if (run_dir / "config.json").is_file():
                shutil.copyfile(run_dir / "config.json", Path(tmp) / f"{kind}.config.json")
            metrics = Path(tmp) / f"{kind}.metrics.jsonl"
            if (run_dir / "metrics.jsonl").is_file():
                _copy_log_until(run_dir / "metrics.jsonl", metrics, ckpt.step)
            train_cfg = ckpt.config.get("train", {})
            logged = _logged_training(metrics, train_cfg)
            records[kind] = {
                "steps": ckpt.step,
                "batch_size": train_cfg.get("batch_size"),
                "device": logged["device"] or trained_on,
                "train_seconds": logged["seconds"],
                "made_by": made_by,
                "commit": commit,
                "sha256": _sha256(path),
                "sha256_safetensors": write_safetensors(Path(tmp), kind),
            }
            if train_cfg.get("init_from"):
                records[kind]["init_from"] = _init_record(
                    kind,
                    Path(train_cfg["init_from"]),
                    records[kind]["sha256"],
                    records[kind]["sha256_safetensors"],
                )
        if STUDENT in records:
            records[STUDENT]["distilled"] = _student_record(
                Path(tmp) / f"{STUDENT}.pt", Path(models[STUDENT]),
                {read["refiner"], records["refiner"]["sha256"]},
            )  # fmt: skip
            # the teacher as shipped (its slim file's sha256 differs from the run's checkpoint)
            records[STUDENT]["refiner_sha256"] = records["refiner"]["sha256"]
        manifest = {
            "format": "realdeal-demo-checkpoints",
            "version": 2,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cohort": cohort,
            "prepare": prepare,
            "models": records,
            "steps": {k: r["steps"] for k, r in records.items()},
            "sha256": {k: r["sha256"] for k, r in records.items()},
            "sha256_safetensors": {k: r["sha256_safetensors"] for k, r in records.items()},
            "torch": torch.__version__,
        }
        write_json_atomic(Path(tmp) / "manifest.json", manifest)
    log.info("demo checkpoints written to %s", dest)
    return dest


def _load_kind(kind: str) -> str:
    """The checkpoint kind of a demo model (the student is a refiner checkpoint)."""
    return "refiner" if kind == STUDENT else kind


def _student_record(path: Path, given: Path, teachers: set[str]) -> dict[str, Any]:
    """The distillation record of the exported student ``path`` (``given`` on the command
    line), refused unless its teacher is one of the files ``teachers`` (sha256)."""
    rec = load_checkpoint(path, kind="refiner").distilled
    if rec is None:
        raise InputError(given, "is not a distilled student (realdeal train refiner-student)")
    if rec.teacher_sha256 not in teachers:
        raise InputError(
            given,
            f"was distilled from another refiner (sha256 {rec.teacher_sha256[:12]}…) than the "
            "one exported beside it",
        )
    return {k: v for k, v in rec.to_dict().items() if k != "timesteps"}


def model_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-model provenance of a demo-checkpoint manifest (version 1 manifests converted)."""
    if manifest.get("version", 1) >= 2:
        return manifest["models"]
    seconds = manifest.get("train_seconds", {})
    return {
        kind: {
            "steps": manifest["steps"][kind],
            "batch_size": None,
            "device": None,
            "train_seconds": seconds.get(f"train {kind}"),
            "made_by": manifest.get("made_by"),
            "commit": None,
            "sha256": manifest.get("sha256", {}).get(kind),
        }
        for kind in MODEL_KINDS
    }


def _init_record(
    kind: str, path: Path, own_sha256: str, own_sha256_safetensors: str | None = None
) -> dict[str, Any]:
    """The record of the weights a fine-tuned run started from (``--init-from``): the path, and
    that model's record when the file is a demo checkpoint whose manifest still describes it
    (the sha256 of its ``.pt`` or of its ``.safetensors`` file must match), so the manifest
    keeps the whole lineage.

    A run exported into the very folder it started from has replaced that file with its own
    export (``own_sha256``): that record describes the run itself, not where it started, so it
    is not taken (exporting again into that folder would otherwise make the run its own
    ancestor). Export from a copy of the folder the run started from to keep the lineage."""
    # relative to the working directory where it lies below it: a manifest ships in the package,
    # and the machine's own folder layout says nothing to its readers
    shown = (
        os.path.relpath(path) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path
    )
    rec: dict[str, Any] = {"path": str(shown)}
    manifest = path.parent / "manifest.json"
    if path.is_file() and manifest.is_file():
        earlier = model_records(json.loads(manifest.read_text())).get(kind)
        sha = _sha256(path)
        own = (own_sha256, own_sha256_safetensors)
        theirs = (earlier or {}).get("sha256"), (earlier or {}).get("sha256_safetensors")
        if earlier and sha in theirs and sha not in own:
            rec.update(earlier)
        elif sha in own:
            log.warning(
                "%s: %s is this run's own export now; the manifest records only its path as the "
                "run's starting point", kind, path,
            )  # fmt: skip
    return rec


def _checkpoint_and_run(src: Path) -> tuple[Path, Path]:
    """(checkpoint file, run folder) of a run folder or of one of its snapshots
    (``RUN/snapshots/step-N.pt``, a student's ``RUN/rounds/round-K.pt``, or any checkpoint file
    inside a run folder)."""
    if src.is_dir():
        return src / "checkpoint.pt", src

    inside = src.parent.name in (SNAPSHOTS_DIR, ROUNDS_DIR)  # a snapshot, a student's round
    return src, src.parent.parent if inside else src.parent


def _copy_log_until(src: Path, dst: Path, step: int) -> None:
    """``src``'s training log up to and including ``step`` (a snapshot's part of its run)."""
    keep = []
    for line in src.read_text().splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            if int(json.loads(line)["step"]) > step:
                break
        keep.append(line)
    dst.write_text("\n".join(keep) + ("\n" if keep else ""))


def _carry_over(
    kind: str, folder: Path, tmp: Path, cohort: dict[str, Any], prepare: dict[str, Any]
) -> dict[str, Any]:
    """Copy ``kind``'s file and logs from an earlier demo-checkpoint folder; return its record.

    A model that folder's manifest describes as trained on another cohort or preparation than
    ``cohort``/``prepare`` keeps that data in its record (``trained_on``)."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
        record = dict(model_records(meta)[kind])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(folder / "manifest.json", f"has no usable {kind} record ({e})") from e
    theirs = record.get("trained_on") or {
        "cohort": meta.get("cohort"),
        "prepare": meta.get("prepare"),
    }
    if _data_record({"cohort": cohort, "prepare": prepare}) != _data_record(theirs):
        record["trained_on"] = theirs
    src = folder / f"{kind}.pt"
    if record.get("sha256") and _sha256(src) != record["sha256"]:
        raise InputError(src, "does not match the sha256 in its manifest.json")
    shutil.copyfile(src, tmp / f"{kind}.pt")
    for name in (f"{kind}.metrics.jsonl", f"{kind}.config.json"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, tmp / name)
    record["sha256"] = _sha256(tmp / f"{kind}.pt")
    return record


def _logged_training(metrics: Path, train_cfg: dict[str, Any]) -> dict[str, Any]:
    """Training seconds (sum over logged windows) and device(s) from a ``metrics.jsonl``."""
    if not metrics.is_file():
        return {"seconds": None, "device": None}

    recs, _ = read_metrics_jsonl(metrics)
    batch = float(train_cfg.get("batch_size") or 1)
    seconds, prev = 0.0, None
    devices: list[str] = []
    for r in recs:
        step, rate = int(r["step"]), r.get("samples_per_s")
        n = step - prev if prev is not None and step > prev else int(train_cfg.get("log_every", 1))
        if isinstance(rate, (int, float)) and rate > 0:
            seconds += n * batch / rate
        if r.get("device") and r["device"] not in devices:
            devices.append(str(r["device"]))
        prev = step
    return {"seconds": round(seconds, 1) if recs else None, "device": ", ".join(devices) or None}


def _git_commit() -> str | None:
    """The commit of the realdeal source tree, when it is a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- run.json


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("realdeal", "torch", "monai", "numpy", "nibabel", "dipy", "scikit-image"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


# --------------------------------------------------------------------------- the demo


def run_demo(
    out: str | os.PathLike, config: DemoConfig | None = None, command: str | None = None, **kw: Any
) -> Path:
    """Run the demo into ``out`` and return the report's path (see the module docstring).

    Keyword arguments are :class:`DemoConfig` fields (``run_demo(out, quick=True)``);
    ``command`` is recorded in ``run.json`` (default: ``realdeal demo``).
    """

    cfg = (config or DemoConfig(**kw)).effective()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    stages = _Stages(total=11)
    ds = _cohort_and_data(cfg, out, stages)
    models = _Models(cfg, out, command)
    models.obtain_all(stages, ds)
    settings = refine_settings(cfg)
    refiner = models.ckpt[models.refiner]
    roles = held_out_roles(ds.ids("test"))
    test = roles["paired"]
    with stages("refine held-out reconstructions"):
        refined_test = out / "refined" / "test"
        recons = [ds.root / "reconstructions" / f"{s}.nii.gz" for s in test]
        _refine_missing(refiner, recons, refined_test, settings, cfg.device)
    with stages("sample"):
        raw = out / "samples" / "raw"
        _sample_missing(models.ckpt["ldm"], ds, raw, cfg)
    with stages("refine samples"):
        refined_samples = out / "samples" / "refined"
        chosen = sorted(raw.glob("sample_*.nii.gz"))[: cfg.n_refined_samples]
        _refine_missing(refiner, chosen, refined_samples, settings, cfg.device)
        raw_subset = out / "samples" / "raw-subset"
        _copy_missing(chosen, raw_subset)

    with stages("evaluate"):
        _evaluate(cfg, ds, roles, refined_test, raw, raw_subset, refined_samples, out)

    run = _run_record(cfg, models, settings, roles, command, started)
    run["config"]["refine_sampling"] = _recorded_sampling(refined_test)
    run["timings"] = stages.timings
    write_json_atomic(out / "run.json", run)
    with stages("report"):
        from realdeal.report.build import build_report

        report = build_report(out)
    run["timings"] = stages.timings
    run["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json_atomic(out / "run.json", run)
    log.info("demo finished in %.1f s; report: %s", run["total_seconds"], report)
    return report


def refine_settings(cfg: DemoConfig) -> RefineSettings:
    """How the demo refines: ``cfg``'s sampling, or the student's own (``refiner_student``)."""
    common = {"precision": cfg.refine_precision, "max_batch": cfg.max_batch, "seed": cfg.seed}
    if cfg.refiner_student:
        return RefineSettings(**common)  # sampler, steps, η, spacing: the checkpoint's record
    return RefineSettings(
        sampler=cfg.refine_sampler,
        steps=cfg.refine_steps,
        eta=cfg.refine_eta,
        spacing=cfg.refine_spacing,
        variance=cfg.refine_variance,
        **common,
    )


def _cohort_and_data(cfg: DemoConfig, out: Path, stages: _Stages):
    """The cohort and its prepared dataset (reused when the run folder has them)."""

    with stages("cohort"):
        cohort_dir = out / "cohort"
        if (cohort_dir / "cohort.json").exists():
            log.info("reusing the cohort in %s", cohort_dir)
        else:
            build_cohort(cohort_dir, cohort_config(cfg))
            cohort_figure(cohort_dir)
    with stages("prepare"):
        data = out / "data"
        if (data / "dataset.json").exists():
            log.info("reusing the prepared dataset in %s", data)
            return PreparedDataset(data)
        return prepare_dataset(
            str(cohort_dir / "*_T1w.nii.gz"),
            data,
            prepare_config(cfg),
            labels="{dir}/{id}_dseg.nii.gz",
        )


class _Models:
    """The run's three models: reused from the run folder, installed from the shipped demo
    checkpoints, or trained here; records where each came from (``models/<kind>/provenance.json``)."""

    def __init__(self, cfg: DemoConfig, out: Path, command: str | None):
        self.cfg, self.command = cfg, command
        self.configs = model_configs(cfg)
        self.kinds = (*MODEL_KINDS, STUDENT) if cfg.refiner_student else MODEL_KINDS
        self.refiner = STUDENT if cfg.refiner_student else "refiner"
        """The model that refines (the refiner, or its student)."""
        self.dirs = {k: out / "models" / k for k in self.kinds}
        self.ckpt = {k: self.dirs[k] / "checkpoint.pt" for k in self.kinds}
        self.shipped = _choose_shipped(cfg)
        manifest = _manifest(self.shipped) if self.shipped else {}
        self.shipped_steps = manifest["steps"] if self.shipped else {}
        self.shipped_records = model_records(manifest) if self.shipped else {}
        self.sources: dict[str, str] = {}
        self.provenance: dict[str, dict[str, Any]] = {}

    def obtain_all(self, stages: _Stages, ds) -> None:

        data, mcfg, dirs = ds.root, self.configs, self.dirs
        with stages("obtain autoencoder"):
            self.obtain("autoencoder", lambda resume: train_autoencoder(
                mcfg["autoencoder"], data, dirs["autoencoder"], resume))  # fmt: skip
        with stages("reconstruct"):
            # the refiner learns from the training subjects' reconstructions; shipped models
            # need only the held-out subjects'
            roles = held_out_roles(ds.ids("test"))
            ids = (
                ds.ids() if self.shipped is None else sorted({s for v in roles.values() for s in v})
            )
            _reconstruct(ds, self.ckpt["autoencoder"], self.cfg.device, ids)
        with stages("obtain ldm"):
            self.obtain("ldm", lambda resume: train_ldm(
                mcfg["ldm"], data, self.ckpt["autoencoder"], dirs["ldm"], resume))  # fmt: skip
        with stages("obtain refiner"):
            self.obtain("refiner", lambda resume: train_refiner(
                mcfg["refiner"], data, dirs["refiner"], resume))  # fmt: skip
            if self.cfg.refiner_student:
                self.obtain_student()

    def obtain_student(self) -> None:
        """Install the shipped student of the run's refiner (``--refiner-student``), checked
        against the manifest and against the refiner it was distilled from."""
        if not self.shipped:
            raise ConfigError(
                "--refiner-student: the demo checkpoints in use were trained on another cohort "
                "(so the refiner is trained here, and no student of it exists)"
            )
        src = next(iter(self.shipped.values())).parent / f"{STUDENT}.pt"
        if not src.is_file():
            raise InputError(src.parent, f"holds no {STUDENT}.pt (needed by --refiner-student)")
        record, src_sha = self.shipped_records.get(STUDENT, {}), _sha256(src)
        if record.get("sha256") and src_sha != record["sha256"]:
            raise InputError(src, "does not match the sha256 in manifest.json (corrupt download?)")
        distilled = load_checkpoint(src, kind="refiner").distilled
        if distilled is None:
            raise InputError(src, "is not a distilled student (realdeal train refiner-student)")
        refiner = _sha256(self.ckpt["refiner"])
        if refiner not in (distilled.teacher_sha256, record.get("refiner_sha256")):
            raise InputError(src, f"was distilled from another refiner than {self.ckpt['refiner']}")
        folder, ckpt = self.dirs[STUDENT], self.ckpt[STUDENT]
        if ckpt.is_file() and _sha256(ckpt) == src_sha:
            log.info("%s: reusing the student in %s", STUDENT, folder)
            self.sources[STUDENT] = "reused"
        else:
            log.info("%s: using the shipped student (%d steps)", STUDENT, distilled.steps)
            _install_checkpoint(src, folder, src.parent)
            self.sources[STUDENT] = f"demo checkpoint ({distilled.steps}-step student)"
            write_json_atomic(
                folder / PROVENANCE, {"source": f"shipped demo checkpoint ({src.parent})"} | record
            )
        self.provenance[STUDENT] = json.loads((folder / PROVENANCE).read_text())

    def obtain(self, kind: str, train_fn) -> None:
        folder, ckpt = self.dirs[kind], self.ckpt[kind]
        if self.cfg.retrain and folder.exists():
            # Keep the last models instead of deleting them (one generation back).
            previous = folder.with_name(f"{kind}.previous")
            if previous.exists():
                shutil.rmtree(previous)
            folder.rename(previous)
            log.info("--retrain: moved the earlier %s to %s", kind, previous)
        need = self.shipped_steps.get(kind, self.configs[kind].train.steps)
        have = _trained_steps(ckpt) if ckpt.is_file() else None
        record_file = folder / PROVENANCE
        if have is not None and have >= need:
            log.info("%s: reusing the model in %s (step %d)", kind, folder, have)
            self.sources[kind] = "reused"
        elif self.shipped:
            shipped = self.shipped[kind]
            log.info(
                "%s: using the shipped demo checkpoint (%s steps; not trained here)",
                kind, self.shipped_steps[kind],
            )  # fmt: skip
            _install_checkpoint(shipped, folder, shipped.parent)
            self.sources[kind] = f"demo checkpoint ({self.shipped_steps[kind]} steps)"
            record = {"source": f"shipped demo checkpoint ({shipped.parent})"}
            write_json_atomic(record_file, record | self.shipped_records.get(kind, {}))
        else:
            log.info("%s: training (%d steps)", kind, self.configs[kind].train.steps)
            t0 = time.perf_counter()
            train_fn(resume=have is not None)
            self.sources[kind] = "trained"
            write_json_atomic(record_file, self._trained_record(kind, have, t0))
        if record_file.is_file():
            self.provenance[kind] = json.loads(record_file.read_text())
        else:  # a run folder from before provenance records: what the checkpoint says
            self.provenance[kind] = {"source": "found in this run folder", "steps": have}

    def config_record(self, kind: str) -> dict[str, Any]:
        """The run config of the model this run used: the one stored beside its checkpoint
        (a shipped or reused model's own), else the config the demo would train with."""
        stored = self.dirs[kind] / "config.json"
        if stored.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                return dict(json.loads(stored.read_text())["config"])
        return to_dict(self.configs[kind])

    def _trained_record(self, kind: str, had: int | None, t0: float) -> dict[str, Any]:
        train_cfg = self.configs[kind].train
        return {
            "source": "trained in this run" + (" (resumed)" if had is not None else ""),
            "steps": train_cfg.steps,
            "batch_size": train_cfg.batch_size,
            "device": _logged_training(self.dirs[kind] / "metrics.jsonl", {})["device"],
            "train_seconds": round(time.perf_counter() - t0, 1),
            "made_by": self.command or "realdeal demo",
        }


def _run_record(
    cfg: DemoConfig,
    models: _Models,
    settings: RefineSettings,
    roles: dict[str, list[str]],
    command: str | None,
    started: str,
) -> dict[str, Any]:
    """``run.json``: what the report reads (sets, models, timings, configs, versions)."""

    return {
        "format": RUN_FORMAT,
        "version": 1,
        "preset": "cpu-small",
        "created": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or "realdeal demo" + (" --quick" if cfg.quick else ""),
        "data": "data",
        "models": {k: f"models/{k}" for k in models.kinds},
        "refiner": f"models/{models.refiner}",
        "model_sources": models.sources,
        "model_provenance": models.provenance,
        "held_out": roles,
        "paired": {
            "subjects": roles["paired"],
            "sets": {"reconstruction": "data/reconstructions", "refined": "refined/test"},
            "eval": "eval/paired",
        },
        "unpaired": {
            # Coverage grows with the number of generated volumes: compare the refined
            # samples with the same raw samples, not with all of them.
            "sets": {
                "sample": "samples/raw",
                "sample subset": "samples/raw-subset",
                "refined sample": "samples/refined",
            }
            | ({CEILING_SET: f"eval/sets/{CEILING_DIR}"} if roles["ceiling"] else {}),
            "figure_sets": ["sample", "refined sample"],
            "real": "eval/sets/real",
            "ceiling": CEILING_SET if roles["ceiling"] else None,
            "eval": "eval/unpaired",
        },
        "memorization": {
            "eval": "eval/memorization",
            # the LDM's training subjects as it saw them; held-out: reconstructions of the real
            # and ceiling subjects, decoded like the samples
            "train": "data/images",
            "generated": {"sample": "samples/raw"},
        },
        "timings": {},
        "config": {
            "demo": to_dict(cfg),
            "cohort": to_dict(cohort_config(cfg)),
            "prepare": to_dict(prepare_config(cfg)),
            "models": {k: models.config_record(k) for k in models.kinds},
            "refine": dataclasses.asdict(settings),
        },
        "versions": _versions(),
    }


def _manifest(files: dict[str, Path]) -> dict[str, Any]:
    return json.loads((next(iter(files.values())).parent / "manifest.json").read_text())


def _choose_shipped(cfg: DemoConfig) -> dict[str, Path] | None:
    """Shipped checkpoints to use, or None (train)."""
    if cfg.retrain or cfg.checkpoints is None:
        return None
    if cfg.checkpoints == PACKAGED:
        folder = packaged_checkpoints()
        if folder is None:
            log.info("no demo checkpoints shipped with this installation; training")
            return None
    else:
        folder = Path(cfg.checkpoints)
        if not folder.is_dir():
            raise InputError(folder, "no such demo checkpoint folder")
    return _usable_checkpoints(cfg, folder)


def _reconstruct(ds, autoencoder: Path, device: str = "auto", ids: list[str] | None = None) -> None:
    """Reconstructions of ``ids`` (default: every subject), redone when the autoencoder file
    changed."""

    stamp = ds.root / "reconstructions" / "reconstruct_config.json"
    fp = checkpoint_fingerprint(autoencoder)
    ids = ds.ids() if ids is None else ids
    same_autoencoder = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp
    if same_autoencoder:
        ids = [s for s in ids if not ds.has_derived("reconstructions", s)]
        if not ids:
            log.info("reusing the reconstructions (same autoencoder)")
            return

    where = resolve_device(device)
    ae, ckpt = load_autoencoder(autoencoder, where)
    reconstruct_dataset(ae, ds, ids, where)
    write_json_atomic(
        stamp, {"autoencoder": str(autoencoder), "fingerprint": fp, "step": ckpt.step}
    )


def _refine_missing(
    checkpoint: Path, inputs: list[Path], out: Path, settings, device: str = "auto"
) -> None:
    """Refine the ``inputs`` not yet in ``out``; all of them again when the refiner file or
    the settings differ from those that refined what is there (``refine_stamp.json``)."""
    stamp = out / "refine_stamp.json"
    want = json.loads(json.dumps({
        "checkpoint": checkpoint_fingerprint(checkpoint), "settings": dataclasses.asdict(settings),
    }))  # fmt: skip
    have = json.loads(stamp.read_text()) if stamp.is_file() else _legacy_stamp(out, checkpoint)
    todo = [p for p in inputs if have != want or not (out / p.name).is_file()]
    if not todo:
        log.info("reusing the refined volumes in %s", out)
        return
    if have is not None and have != want:
        log.info("refining %s again: the refiner or its settings changed", out)
    out.mkdir(parents=True, exist_ok=True)
    refine_paths(checkpoint, [str(p) for p in todo], out, settings, device=device)
    write_json_atomic(stamp, want)


def _recorded_sampling(out: Path) -> dict[str, Any] | None:
    """The sampling that refined the volumes in ``out``, as its ``refine.json`` records it
    (``None`` in a folder refined before it did)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return dict(json.loads((out / "refine.json").read_text())["sampling"])
    return None


def _legacy_stamp(out: Path, checkpoint: Path) -> dict[str, Any] | None:
    """What a run folder from before ``refine_stamp.json`` refined with, from its
    ``refine.json`` (settings, and the checkpoint file if it is the same path), or None."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        rec = json.loads((out / "refine.json").read_text())
        if Path(rec["checkpoint"]) == Path(checkpoint) and Path(checkpoint).is_file():
            return {"checkpoint": checkpoint_fingerprint(checkpoint), "settings": rec["settings"]}
    return None


def _sample_missing(checkpoint: Path, ds, out: Path, cfg: DemoConfig) -> None:

    if len(list(out.glob("sample_*.nii.gz"))) >= cfg.n_samples:
        log.info("reusing the samples in %s", out)
        return

    pipe = LatentDiffusionPipeline.from_checkpoint(checkpoint, device=resolve_device(cfg.device))
    reference = ds.load_image(ds.ids()[0])
    save_samples(
        pipe,
        cfg.n_samples,
        out,
        reference,
        {"checkpoint": str(checkpoint), "sampler": cfg.sample_sampler, "steps": cfg.sample_steps},
        sampler=cfg.sample_sampler,
        steps=cfg.sample_steps,
        seed=cfg.seed,
        batch_size=cfg.sample_batch,
    )


def _copy_missing(files: list[Path], out: Path) -> None:
    """Copy ``files`` into ``out`` (the raw samples that were refined, as their own set)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (out / f.name).is_file():
            tmp = out / f".{f.name}.part"
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)


def _evaluate(
    cfg: DemoConfig, ds, roles, refined_test, raw, raw_subset, refined_samples, out: Path
) -> None:
    """Paired (held-out) and unpaired (samples) suites, weight-free so they run offline, and
    memorisation."""

    # The paper's 64-voxel patches, or the largest multiple of 8 that fits (quick: 4 mm).
    patch = min(64, *ds.shape) // 8 * 8
    small = {"n_patches_2d": 200, "patch_size_2d": patch} if cfg.quick else {}
    paired_cfg = suite.PairedConfig(
        lpips=False,
        seed=cfg.seed,
        seam_window=ds.window,  # the demo's refiner trains and refines with the prepared window
        sharpness=SharpnessConfig(patch_size=patch),
        **small,
        **({"n_bootstrap": 200} if cfg.quick else {}),
    )
    root, test = ds.root, roles["paired"]
    recon = root / "reconstructions"
    files = {
        "originals": [root / "images" / f"{s}.nii.gz" for s in test],
        "labels": [root / "labels" / f"{s}.nii.gz" for s in test],
        "reconstruction": [recon / f"{s}.nii.gz" for s in test],
        "refined": [refined_test / f"{s}.nii.gz" for s in test],
    }
    suite.evaluate_paired(
        find_set("originals", files["originals"]),
        [find_set(n, files[n]) for n in ("reconstruction", "refined")],
        find_set("labels", files["labels"]),
        paired_cfg,
        workers=cfg.workers,
        out_dir=out / "eval" / "paired",
    )
    # The samples against held-out subjects the LDM never saw, beside the ceiling: the
    # autoencoder's reconstructions of as many other unseen subjects. 250 patches per axis and
    # volume (the paper: 1,000) and 10 leave-one-subject-out sets keep the k-NN to about a
    # minute on 2 cores.
    sets_dir = out / "eval" / "sets"
    _copy_missing([root / "images" / f"{s}.nii.gz" for s in roles["real"]], sets_dir / "real")
    generated = [
        find_set("sample", raw),
        find_set("sample subset", raw_subset),
        find_set("refined sample", refined_samples),
    ]
    if roles["ceiling"]:
        ceiling = [recon / f"{s}.nii.gz" for s in roles["ceiling"]]
        _copy_missing(ceiling, sets_dir / CEILING_DIR)
        generated.insert(1, find_set(CEILING_SET, sets_dir / CEILING_DIR))
    unpaired_cfg = suite.UnpairedConfig(
        features="patchstats", seed=cfg.seed, n_bootstrap=0 if cfg.quick else 10,
        **(small or {"n_patches_2d": 250}),
    )  # fmt: skip
    suite.evaluate_unpaired(
        find_set("real", sets_dir / "real"),
        generated,
        unpaired_cfg,
        workers=cfg.workers,
        out_dir=out / "eval" / "unpaired",
    )
    # Coverage cannot tell new brains from recalled ones: the raw samples against the LDM's
    # training subjects, with the reconstructions of unseen subjects (decoded like the samples)
    # as the baseline.

    held_out = roles["real"] + roles["ceiling"]
    mem = evaluate_memorization(
        find_set("train", [root / "images" / f"{s}.nii.gz" for s in ds.ids("train")]),
        [find_set("sample", raw)],
        find_set("held-out", [recon / f"{s}.nii.gz" for s in held_out]),
        out_dir=out / "eval" / "memorization",
    )
    copies = mem.summary[-1]["copies"]
    if copies:
        log.warning(
            "memorisation: %d of %d LDM samples are copies of training subjects (report section "
            "'Memorisation'); coverage and density count them as realistic",
            copies, mem.summary[-1]["volumes"],
        )  # fmt: skip
