"""Head detection, brain masks and cheap input checks (MNI152 extraction: tests/test_own_scans.py;
the foreground: tests/data/test_anatomy.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from realdeal.data.brain import (
    HEAD_VOLUME_ML,
    brain_for,
    check_inputs,
    detect_head,
    load_brain_mask,
)
from realdeal.data.io import Volume, load_volume
from realdeal.errors import InputError

from synthetic import save_nifti

SPACING = 3.0


def _ball(radius_mm: float, shape=(70, 70, 70)) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = np.sqrt((((idx - np.array(shape) / 2.0) * SPACING) ** 2).sum(-1))
    return d < radius_mm


def _brain_and_head() -> tuple[np.ndarray, np.ndarray]:
    """A 1.4 L 'brain' (r = 70 mm) and the same brain inside a dark skull and bright scalp
    (r = 95 mm, 3.6 L), in raw units with background 0."""
    brain = np.where(_ball(70), 600.0, 0.0).astype(np.float32)
    brain[_ball(40)] = 900.0
    head = brain.copy()
    head[_ball(95) & ~_ball(85)] = 1100.0  # scalp fat, brighter than white matter
    head[_ball(85) & ~_ball(72)] = 40.0  # skull: dark but not background
    return brain, head


def _vol(x: np.ndarray, path=None) -> Volume:
    return Volume(x, np.diag([SPACING] * 3 + [1.0]), path=path)


def test_a_head_is_told_from_a_brain_by_its_foreground_volume():
    brain, head = _brain_and_head()
    b, h = detect_head(_vol(brain)), detect_head(_vol(head))
    assert not b.is_head and 1300 < b.foreground_ml < 1500  # 4/3·π·70³ mm³ = 1.44 L
    assert h.is_head and h.foreground_ml > HEAD_VOLUME_ML
    # units do not matter, nor a model-space scan (background −1)
    assert not detect_head(_vol(brain / 900.0 * 2 - 1)).is_head
    assert detect_head(_vol(head * 0.01)).is_head


def test_heads_are_refused_with_the_fix_or_allowed_with_a_warning(caplog):
    _, head = _brain_and_head()
    with pytest.raises(InputError, match="head.*realdeal skullstrip.*--brain-mask"):
        brain_for(_vol(head, "head.nii.gz"))
    with caplog.at_level(logging.WARNING):
        mask, masked = brain_for(_vol(head, "head.nii.gz"), allow_head=True)
    assert "--allow-head" in caplog.text and not masked and mask.sum() > 0


def test_a_brain_mask_file_or_folder_overrides_and_must_share_the_grid(tmp_path):
    brain, head = _brain_and_head()
    aff = np.diag([SPACING] * 3 + [1.0])
    scan = load_volume(save_nifti(tmp_path / "s1.nii.gz", head, aff))
    (tmp_path / "masks").mkdir()
    save_nifti(tmp_path / "masks" / "s1.nii.gz", (brain > 0).astype(np.uint8), aff)
    for spec in (tmp_path / "masks", tmp_path / "masks" / "s1.nii.gz"):
        mask, masked = brain_for(scan, brain_mask=spec)
        assert masked and np.array_equal(mask, brain > 0)
    save_nifti(tmp_path / "small.nii.gz", np.ones((8, 8, 8), np.uint8), aff)
    with pytest.raises(InputError, match="brain mask shape"):
        load_brain_mask(tmp_path / "small.nii.gz", scan)


def test_input_checks_name_the_bad_file(tmp_path):
    good = save_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="missing.nii.gz: file not found"):
        check_inputs([good, tmp_path / "missing.nii.gz"])
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="junk.nii.gz: not a readable NIfTI"):
        check_inputs([tmp_path / "junk.nii.gz"])
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="masks/a.nii.gz: file not found"):
        check_inputs([good], brain_mask=tmp_path / "masks")
