"""A training run's folder: what may be in it, what a resumed run may change, one writer.

``realdeal train KIND -o RUN`` (the ``train_*`` functions behind it) decides everything that
can refuse the run before it writes anything — a refused run leaves ``RUN`` as it was:

* ``RUN`` is a folder or does not exist yet; if it holds anything, it is a realdeal run folder
  of the same kind (its ``config.json`` is such a run's config, or it holds a
  ``checkpoint.pt``); any other folder is refused, never written into;
* an existing ``checkpoint.pt`` needs ``--resume``;
* with ``--resume`` the configuration equals the checkpoint's (the configuration the run was
  trained with) in every field but :data:`RESUMABLE_FIELDS`, and the data are what the run
  trained on: the values :func:`open_run` is given as ``same`` must equal those the
  checkpoint stores (an LDM's autoencoder fingerprint, the image grid), and its ``inputs``
  (content fingerprints: the prepared dataset's ``dataset.json``, the autoencoder file) those
  recorded in ``RUN/inputs.json`` when the run started.

The run then holds :func:`~realdeal.training.distributed.exclusive_folder` until it ends: a
second ``realdeal`` process writing into ``RUN`` is refused in one line; under torchrun only
rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from realdeal.config import from_dict, to_dict
from realdeal.errors import ConfigError, InputError
from realdeal.runtime.checkpoint import FORMAT, read_torch_file
from realdeal.training.distributed import DistInfo, exclusive_folder
from realdeal.utils.fs import is_hidden_or_temp, sha256_file, write_json_atomic

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
INPUTS_NAME = "inputs.json"
INPUTS_FORMAT = "realdeal-run-inputs"

RESUMABLE_FIELDS = (
    "steps",
    "log_every",
    "checkpoint_every",
    "snapshot_every",
    "num_workers",
    "device",
    "precision",
    "channels_last",
    "grad_accum",
    "init_from",
)
"""The fields of a run's ``train`` config that ``--resume`` may change: how long the run goes
on, how often it logs and saves, and where and how it computes (``grad_accum`` splits the same
global batch; ``init_from`` is ignored on resume). Every other field — the network, the
schedule, the data and crops, the batch, the optimizer, lr and its schedule, EMA, seed — must
equal the checkpoint's: a run continued with others would be neither run."""

MEASURED_FIELDS = ("residual_scale",)
"""Fields a run measures when they are unset: unset in a resumed run's config, they take the
value the run measured (stored in its checkpoint) rather than counting as a change."""


@dataclasses.dataclass(frozen=True)
class RunState:
    """What :func:`open_run` found in the run folder."""

    folder: Path
    checkpoint: Path | None = None
    """The checkpoint a ``--resume`` continues (None: the run starts at step 0)."""
    config: dict[str, Any] | None = None
    """The run config stored in that checkpoint."""
    step: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The checkpoint's kind-specific values (latent scaling, autoencoder fingerprint, …)."""

    def stored(self, field: str) -> Any:
        """A top-level field of the stored run config (None without one)."""
        return None if self.config is None else self.config.get(field)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(
    stored: dict[str, Any], new: dict[str, Any], config_class: type | None = None
) -> list[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for every field (dotted, e.g. ``train.lr``) in which
    the run config ``new`` differs from ``stored`` where a resumed run may not differ.

    A field added to the config after the run was written is missing from ``stored``; given
    the run's ``config_class``, it is compared as its default (which is how the run was
    trained: a new field's default keeps the old behaviour), otherwise it is not compared."""
    if config_class is not None:
        with contextlib.suppress(ConfigError):
            stored = to_dict(from_dict(config_class, stored))
    a, b = _flatten(stored), _flatten(new)
    out = []
    for key in sorted(set(a) & set(b)):
        head, _, last = key.rpartition(".")
        if head == "train" and last in RESUMABLE_FIELDS:
            continue
        if last in MEASURED_FIELDS and b[key] is None:
            continue
        if a[key] != b[key]:
            out.append((key, a[key], b[key]))
    return out


def resume_refusal(conflicts: list[tuple[str, Any, Any]]) -> str:
    """The one-line reason a resumed run with these conflicts is refused."""
    shown = ", ".join(f"{k} {a!r} → {b!r}" for k, a, b in conflicts[:4])
    more = f" and {len(conflicts) - 4} more" if len(conflicts) > 4 else ""
    return (
        f"--resume cannot change what the run was trained with ({shown}{more}); on resume only "
        f"{', '.join(RESUMABLE_FIELDS)} may change (train into another --out for the rest)"
    )


def read_run_checkpoint(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(run config, extra values, step) of a training checkpoint, without reading its weights
    (memory-mapped); :class:`InputError` if it is not a realdeal checkpoint of ``kind``."""

    raw = read_torch_file(path, "cpu", mmap=True)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(path, "not a realdeal checkpoint (no realdeal format marker)")
    if raw.get("kind") != kind:
        raise InputError(
            path, f"is a checkpoint of kind {raw.get('kind')!r}, but kind {kind!r} is needed here"
        )
    try:
        config = json.loads(raw["config"])
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(path, f"holds no readable run config ({e})") from e
    extra = raw.get("extra") or {}
    return config, extra if isinstance(extra, dict) else {}, int(raw.get("step", 0))


def _config_kind(path: Path) -> str | None:
    """The ``kind`` of a config file written by :func:`realdeal.config.save_config`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        kind = data.get("kind")
        return kind if isinstance(kind, str) else None
    return None


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def dataset_fingerprint(ds: Any) -> str:
    """Content fingerprint of a prepared dataset: the sha256 of its ``dataset.json`` (which
    names every subject, its source, split and transform, and the intensity window), so a
    dataset moved elsewhere keeps it and another or re-prepared-differently one does not."""
    return sha256_file(Path(ds.root) / "dataset.json")


def recorded_inputs(folder: Path) -> dict[str, Any]:
    """The input fingerprints ``folder/inputs.json`` records ({} if none)."""
    try:
        data = json.loads((folder / INPUTS_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != INPUTS_FORMAT:
        return {}
    inputs = data.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def inspect_run(
    folder: Path,
    kind: str,
    config_class: type,
    run_config: dict[str, Any],
    resume: bool,
    same: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> RunState:
    """Check that a run of ``kind`` (config class ``config_class``, resolved config
    ``run_config``) may write into ``folder``; raise :class:`InputError` (one line) if not.
    Reads only (see the module docstring for the rules)."""
    config_kind = config_class.__name__
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder; choose another --out")
    cfg_file, ckpt = folder / CONFIG_NAME, folder / CHECKPOINT_NAME
    if cfg_file.exists():
        found = _config_kind(cfg_file)
        if found != config_kind:
            what = f"holds a {found}" if found else "is not a realdeal run config"
            raise InputError(
                cfg_file,
                f"{what}, not a {config_kind}: this is not a realdeal {kind} run folder; "
                "refusing to write into it (choose another --out)",
            )
    elif not ckpt.exists() and folder.is_dir():
        ours = {INPUTS_NAME} if recorded_inputs(folder) else set()  # a run cut short early
        visible = sorted(
            p.name for p in folder.iterdir() if not is_hidden_or_temp(p.name) and p.name not in ours
        )
        if visible:
            raise InputError(
                folder,
                f"is not empty ({visible[0]!r}{' …' if len(visible) > 1 else ''}) and is not a "
                f"realdeal run folder (no {CONFIG_NAME}); refusing to write into it (choose "
                "another --out)",
            )
    if not ckpt.exists():
        return RunState(folder)
    if not resume:
        raise InputError(
            folder,
            "already holds a checkpoint; pass --resume to continue it or choose another --out",
        )
    stored, extra, step = read_run_checkpoint(ckpt, kind)
    conflicts = resume_conflicts(stored, run_config, config_class)
    if conflicts:
        raise InputError(folder, resume_refusal(conflicts))
    for key, value in (same or {}).items():
        have = _lookup(extra, key)
        if have is not None and _plain(have) != _plain(value):
            raise InputError(
                folder,
                f"--resume with other data: the run was trained with {key} {_plain(have)!r}, "
                f"now {_plain(value)!r} (train into another --out)",
            )
    recorded = recorded_inputs(folder)
    for key, value in (inputs or {}).items():
        if key in recorded and recorded[key] != value:
            raise InputError(
                folder,
                f"--resume with other data: the run started from another {key} (fingerprint "
                f"{str(recorded[key])[:12]}…, now {str(value)[:12]}…; {INPUTS_NAME}); train "
                "into another --out",
            )
    return RunState(folder, ckpt, stored, step, extra)


@contextlib.contextmanager
def open_run(
    folder: str | os.PathLike,
    kind: str,
    cfg: Any,
    *,
    resume: bool,
    dist: DistInfo | None = None,
    same: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> Iterator[RunState]:
    """Decide whether the run ``cfg`` (a run config dataclass) of ``kind`` may write into
    ``folder`` — before anything is written — and be its one writer until the block ends.

    ``same``: values the run's checkpoint must hold under these (dotted) ``extra`` keys when
    resuming, e.g. ``{"autoencoder.fingerprint": …}``; ``inputs``: content fingerprints of the
    run's inputs, recorded in ``folder/inputs.json`` once the run is accepted and compared with
    that record when it resumes. The checks run on rank 0 before the lock (a refused run
    creates nothing) and again under it (another process may have written meanwhile); every
    rank raises a refusal. Yields the :class:`RunState` found."""

    folder = Path(folder)
    run_config = to_dict(cfg)
    train_cfg = getattr(cfg, "train", None)
    world = dist.world_size if dist is not None else 1
    if train_cfg is not None and train_cfg.batch_size % (world * train_cfg.grad_accum):
        raise ConfigError(
            f"batch_size {train_cfg.batch_size} must be divisible by world_size × grad_accum "
            f"= {world} × {train_cfg.grad_accum}"
        )

    def check() -> RunState:
        return inspect_run(folder, kind, type(cfg), run_config, resume, same, inputs)

    main = dist is None or dist.is_main
    with exclusive_folder(folder, dist, check, check_first=True) as state:
        if main and inputs:
            _record_inputs(folder, inputs, resumed=state.checkpoint is not None)
        yield state if main else _state_on_other_ranks(folder, kind, resume)


def _record_inputs(folder: Path, inputs: dict[str, Any], resumed: bool) -> None:
    """Write ``folder/inputs.json`` (a resumed run keeps what the record says of other inputs)."""
    recorded = recorded_inputs(folder)
    new = {**recorded, **inputs} if resumed else dict(inputs)
    if new != recorded:
        write_json_atomic(
            folder / INPUTS_NAME, {"format": INPUTS_FORMAT, "version": 1, "inputs": new}
        )


def _state_on_other_ranks(folder: Path, kind: str, resume: bool) -> RunState:
    """What rank 0 found, read again by another rank (after rank 0's checks passed)."""
    ckpt = folder / CHECKPOINT_NAME
    if not (resume and ckpt.exists()):
        return RunState(folder)
    config, extra, step = read_run_checkpoint(ckpt, kind)
    return RunState(folder, ckpt, config, step, extra)
