"""A run folder as the report reads it: the manifest ``run.json`` and the training logs it names.

``run.json`` (format ``realdeal-run``, written by ``realdeal demo``) names the prepared
dataset, the paired and unpaired candidate sets and their ``realdeal evaluate`` output
folders, the models' folders (each with a ``metrics.jsonl`` training log), timings,
configuration and package versions; every path in it is relative to the run folder.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from realdeal import __version__
from realdeal.errors import InputError

RUN_FORMAT = "realdeal-run"
RUN_VERSION = 1
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


def read_metrics_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a training ``metrics.jsonl`` that have numeric ``step`` and ``loss``, and the
    number of lines skipped (blank lines aside). A torn last line (no newline and not a whole
    record: its writer died mid-line, or is writing it now) is left out with a warning and not
    counted as skipped."""
    import logging

    good, bad = [], 0
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            float(r["step"]), float(r["loss"])
        except (ValueError, TypeError, KeyError, IndexError):
            if i == len(lines) and not text.endswith("\n"):
                logging.getLogger(__name__).warning(
                    "%s: skipping its torn last line %d (a write cut short)", path, i
                )
                continue
            bad += 1
            continue
        good.append(r)
    return good, bad
