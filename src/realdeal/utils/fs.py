"""Atomic writes: outputs appear under their final name complete, or not at all.

Also what keeps a user's own files safe around them: :func:`atomic_dir` replaces only an earlier
realdeal output of the same kind (``marker``), :func:`is_hidden_or_temp` names the temporary
files that input listings skip, :func:`file_fingerprint` ties cache entries to the content of
their inputs, and :func:`folder_lock` lets one realdeal process at a time write into a folder.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from realdeal.errors import InputError

LOCK_NAME = ".realdeal.lock"
"""The lock file :func:`folder_lock` holds inside an output folder while a command writes."""

_TEMP_PATTERNS = (".*.tmp", ".*.tmp.*", ".*.old", ".*.part", LOCK_NAME)
"""Names realdeal's own writers give temporary files and folders (all hidden)."""


def is_hidden_or_temp(name: str | os.PathLike) -> bool:
    """True for names that are never inputs: hidden names (every temporary name of realdeal's
    writers starts with a dot — ``.NAME.XXXX.tmp.nii.gz``, ``.NAME.XXXX.tmp``,
    ``.NAME.XXXX.old``, ``.NAME.part``, :data:`LOCK_NAME` — and a process killed mid-write leaves
    them behind) and names ending in ``.part`` or ``.tmp``."""
    n = Path(name).name
    return n.startswith(".") or n.endswith((".part", ".tmp"))


def _is_realdeal_temp(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in _TEMP_PATTERNS)


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
    choose a format from the extension behave the same; it is hidden (starts with a dot), so
    input listings skip it should a killed process leave it. On error the temporary file is
    removed and ``path`` is left as it was. The file gets a plain write's mode after the block
    too (some writers, safetensors for one, replace the file they are given by a private one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _plain_mode(tmp_path)
        yield tmp_path
        if tmp_path.exists():
            _plain_mode(tmp_path)
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


# --------------------------------------------------------------------------- folders


def output_format(folder: str | os.PathLike, marker: str) -> str | None:
    """The ``format`` value of the JSON file ``folder/marker``, or None if there is none."""
    try:
        data = json.loads((Path(folder) / marker).read_text())
    except (OSError, ValueError):
        return None
    fmt = data.get("format") if isinstance(data, dict) else None
    return fmt if isinstance(fmt, str) else None


def check_replaceable(
    path: str | os.PathLike,
    overwrite: bool = False,
    marker: tuple[str, str] | None = None,
    contents: Sequence[str] | None = None,
) -> Path:
    """Raise :class:`InputError` (one line, naming ``path``) unless :func:`atomic_dir` may put
    a new folder at ``path``; return the folder to replace (a link's target for a symbolic link
    to a folder, so the link stays).

    Free: a missing path or an empty folder. With ``overwrite`` also a folder holding
    ``marker = (FILE, FORMAT)``, i.e. a JSON file ``FILE`` whose ``"format"`` is ``FORMAT``
    (an earlier realdeal output of the same kind) and, if ``contents`` (glob patterns of the
    names such an output holds) is given, nothing else but realdeal's temporary files. Anything
    else is refused: a file, a link to no folder, a non-empty folder without ``overwrite`` or
    without its marker (whatever ``overwrite`` says, a writer that names no ``marker`` replaces
    no non-empty folder), and a marked folder holding other files.
    """
    path = Path(path)
    if path.is_symlink():
        if not path.is_dir():
            raise InputError(path, "is a symbolic link to no folder; refusing to replace it")
        path = path.resolve()
    if not path.exists():
        return path
    if not path.is_dir():
        raise InputError(path, "exists and is not a folder; refusing to replace it")
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return path
    if not overwrite:
        raise InputError(path, "exists and is not empty; refusing to replace it")
    if marker is None:
        raise InputError(
            path,
            "exists and is not empty, and nothing tells which realdeal output may be "
            "replaced here; refusing to replace it (choose another folder)",
        )
    file, fmt = marker
    found = output_format(path, file)
    if found != fmt:
        what = "no " + file if found is None else f"{file} of format {found!r}"
        raise InputError(
            path,
            f"is not a realdeal output of this kind ({what}, expected format {fmt!r}); "
            "refusing to replace it (choose another folder)",
        )
    if contents is not None:
        foreign = [
            n
            for n in names
            if not _is_realdeal_temp(n) and not any(fnmatch.fnmatchcase(n, p) for p in contents)
        ]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise InputError(
                path,
                f"holds {foreign[0]!r}{more}, which realdeal did not write there; refusing to "
                "replace the folder (move your files out first, or choose another folder)",
            )
    return path


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    marker: tuple[str, str] | None = None,
    contents: Sequence[str] | None = None,
) -> Iterator[Path]:
    """Build a folder under a temporary name and move it onto ``path`` when the block succeeds.

    What may be at ``path``: see :func:`check_replaceable` (checked before the block, so a
    refused call writes nothing, and again before the rename). ``overwrite`` replaces only an
    earlier realdeal output of the same kind, named by ``marker = (FILE, FORMAT)`` (e.g.
    ``("cohort.json", "realdeal-cohort")``); without a marker no non-empty folder is replaced.
    The old folder is renamed aside, the new one renamed in, and only then the old one removed
    (put back if the second rename fails). On error nothing under ``path`` changes and the
    temporary folder is removed.
    """
    path = check_replaceable(path, overwrite, marker, contents)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _plain_mode(tmp, directory=True)
        yield tmp
        check_replaceable(path, overwrite, marker, contents)  # it may have changed meanwhile
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "x", path)
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- input fingerprints


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a file's content for a cache: ``{"sha256", "size", "mtime_ns"}``.

    The size and modification time let :func:`check_fingerprint` skip hashing an unchanged file."""
    st = os.stat(path)
    return {"sha256": sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_fingerprint(path: str | os.PathLike, stored: Any) -> dict[str, Any] | None:
    """Whether ``path`` still holds the content ``stored`` (a :func:`file_fingerprint`) names:
    its fingerprint if so (``stored`` itself, or a new one with the same sha256 where the file
    was rewritten or touched without changing), else None.

    Same size and modification time count as the same file (no hashing); otherwise the sha256
    decides."""
    if not isinstance(stored, dict) or not isinstance(stored.get("sha256"), str):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != stored.get("size"):
        return None
    if st.st_mtime_ns == stored.get("mtime_ns"):
        return stored
    fp = file_fingerprint(path)
    return fp if fp["sha256"] == stored["sha256"] else None


def written_after(entry: str | os.PathLike, source: str | os.PathLike) -> bool:
    """Whether file ``entry`` was last written after ``source`` last changed (so it was made
    from ``source``'s present content, if it was made from ``source`` at all): how a cache
    entry written before entries recorded their input's fingerprint is judged."""
    try:
        return os.stat(entry).st_mtime_ns >= os.stat(source).st_mtime_ns
    except OSError:
        return False


# --------------------------------------------------------------------------- one writer per folder

_held: dict[tuple[int, int], list[Any]] = {}
"""Locks this process holds: (st_dev, st_ino) of the folder → [fd, depth]."""


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").split()
    except OSError:
        text = []
    return text[0] if text else "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Be the only realdeal process writing into ``folder`` (created if missing) in the block.

    An exclusive, non-blocking ``fcntl.flock`` on ``FOLDER/.realdeal.lock``: while another
    process holds it, :class:`InputError` "FOLDER is in use by another realdeal process (pid
    N)". The kernel drops the lock however the holder ends (even SIGKILL), so a lock file left
    behind never blocks anyone. The lock file is removed on release (the next holder checks it
    locked the file that is still there), and a folder this call created is removed again if
    nothing but the lock was written into it — a refused command leaves nothing behind.
    Re-entrant within a process: a nested call for the same folder shares the lock.
    """
    import fcntl

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    st = folder.stat()
    key = (st.st_dev, st.st_ino)
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    lock = folder / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise InputError(
                None, f"{folder} is in use by another realdeal process (pid {holder})"
            ) from None
        except OSError:  # a file system without flock (some network mounts): no lock
            os.close(fd)
            fd = -1
            break
        try:  # the holder before us may have removed the file we locked
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    if fd >= 0:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _held[key]
        if fd >= 0:
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)
        if created:
            _remove_if_bare(folder)


def _remove_if_bare(folder: Path) -> None:
    """Remove ``folder`` if it is empty (a new holder's lock file keeps it)."""
    with contextlib.suppress(OSError):
        folder.rmdir()
