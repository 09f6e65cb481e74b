"""Atomic writes: outputs appear under their final name complete, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask: from ``/proc/self/status`` where Linux has it (reading it there leaves
    it alone, so other threads creating files meanwhile are unaffected), else by setting it and
    putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, directory: bool = False) -> None:
    """Give a temporary file or folder the mode a plain ``open()``/``mkdir()`` would (``mkstemp``
    and ``mkdtemp`` make them private, 0600/0700: outputs would be unreadable to a lab's group)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _split_suffix(name: str) -> tuple[str, str]:
    """Split ``name`` into stem and suffix, keeping double suffixes such as ``.nii.gz``."""
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return name[: -len(double)], double
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix (``.nii.gz`` stays ``.nii.gz``) so that writers that
    choose a format from the extension behave the same. On error the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _plain_mode(tmp_path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically.

    Non-finite floats (NaN, ±inf) are refused with a ``ValueError`` naming the file and the
    first offending key, and nothing is written: ``json.dumps`` would otherwise write bare
    ``NaN``/``Infinity``, which is not JSON (strict parsers, ``jq``, browsers reject the file).
    A value that is legitimately undefined must be written as ``None`` (``null``) by its caller.
    """
    import math

    def first_non_finite(x: Any, where: str) -> str | None:
        if isinstance(x, float):
            return None if math.isfinite(x) else f"{where or 'the value'} = {x!r}"
        if isinstance(x, dict):
            items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            items = ((f"{where}[{i}]", v) for i, v in enumerate(x))
        else:
            return None
        return next((r for k, v in items if (r := first_non_finite(v, k)) is not None), None)

    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError as e:
        bad = first_non_finite(obj, "")
        if bad is None:
            raise
        raise ValueError(
            f"{os.fspath(path)}: refusing to write a non-finite number to JSON ({bad}); "
            "NaN and infinity are not valid JSON (write None for an undefined value)"
        ) from e
    write_text_atomic(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it onto ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced only after the new folder is complete;
    otherwise ``path`` must not exist or must be empty. On error nothing under ``path`` changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    _plain_mode(tmp, directory=True)
    try:
        yield tmp
        if path.exists():
            if not overwrite and any(path.iterdir()):
                raise FileExistsError(f"{path} exists and is not empty")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
