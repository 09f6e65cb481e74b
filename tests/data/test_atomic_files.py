"""Atomic outputs: complete under their final name, with the permissions a plain write gives."""

from __future__ import annotations

import os
import stat

import pytest

from realdeal.utils.fs import atomic_dir, atomic_path, write_json_atomic


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_outputs_get_the_mode_of_a_plain_write(tmp_path, umask):
    """mkstemp/mkdtemp make private 0600/0700 files: a lab's shared outputs (refined volumes,
    checkpoints, exported demo folders) must follow the umask like any other file."""
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain-dir").mkdir()
        write_json_atomic(tmp_path / "a.json", {"a": 1})
        with atomic_path(tmp_path / "v.nii.gz") as tmp:
            tmp.write_bytes(b"\0")
        with atomic_dir(tmp_path / "folder") as d:
            (d / "inside.txt").write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "v.nii.gz") == 0o666 & ~umask
    assert _mode(tmp_path / "folder") == _mode(tmp_path / "plain-dir") == 0o777 & ~umask


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
