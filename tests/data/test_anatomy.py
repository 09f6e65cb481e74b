"""The foreground mask and the label-composition rule that the cohort, the skull stripping and
the automatic labels share."""

from __future__ import annotations

import numpy as np
import pytest

from realdeal.data import anatomy as A
from realdeal.data import labels as L

# --- foreground ---------------------------------------------------------------------------


def _ball(shape, radius, centre=None):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    c = np.array(shape) / 2.0 if centre is None else np.asarray(centre)
    return np.sqrt(((idx - c) ** 2).sum(-1)) < radius


def test_foreground_fills_holes_and_keeps_the_largest_component():
    x = np.zeros((20, 20, 20), np.float32)
    x[4:16, 4:16, 4:16] = 100.0
    x[8:12, 8:12, 8:12] = 0.0  # a dark hole inside
    x[0, 0, 0] = 100.0  # a speck
    for top in ("p99", "max"):
        m = A.foreground(x, top=top)
        assert m[10, 10, 10] and not m[0, 0, 0] and m.sum() == 12**3


def test_foreground_of_a_head_is_the_whole_head():
    """Brain in a dark (but not background) skull in a bright scalp: the scalp is a closed
    shell, so filling it makes the whole head the foreground."""
    shape = (40, 40, 40)
    head = np.zeros(shape, np.float32)
    head[_ball(shape, 18)] = 1100.0  # scalp
    head[_ball(shape, 16)] = 20.0  # skull: under 5 % of the 99th percentile
    head[_ball(shape, 13)] = 700.0  # brain
    head[_ball(shape, 6)] = 900.0
    m = A.foreground(head)
    np.testing.assert_array_equal(m, _ball(shape, 18))


def test_foreground_above_background_keeps_a_dim_rim():
    """``fraction=1e-6, top="max"``: everything above the background of a skull-stripped image
    (background −1 as prepared), where the default 5 % of the 99th percentile drops a dim rim."""
    shape = (30, 30, 30)
    x = np.full(shape, -1.0, np.float32)
    x[_ball(shape, 12)] = -0.95  # dim rim, 2.5 % of the range above the background
    x[_ball(shape, 10)] = 0.5
    np.testing.assert_array_equal(A.foreground(x, fraction=1e-6, top="max"), _ball(shape, 12))
    np.testing.assert_array_equal(A.foreground(x), _ball(shape, 10))
    assert not A.foreground(np.full(shape, 3.0, np.float32), 1e-6, "max").any()  # constant
    with pytest.raises(ValueError, match="top"):
        A.foreground(x, top="mean")  # type: ignore[arg-type]


# --- the label rule -------------------------------------------------------------------------

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-40.0, -60.0, -40.0)  # voxel → MNI mm: x −40…38, y −60…34, z −40…38
SHAPE = (40, 48, 40)


def _vox(x: float, y: float, z: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.round(np.linalg.solve(AFFINE, [x, y, z, 1.0])[:3]))  # type: ignore[return-value]


def _inputs():
    """brain, white matter, dark voxels and AAL on a small grid in MNI space."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    xyz = idx @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    brain = np.zeros(SHAPE, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    wm = (z > 20) | (z < -30)
    dark = (abs(x + 0.5) < 8) & (y >= -20) & (y < 0) & (z >= 0) & (z < 16)  # in the box
    dark |= (x >= -38) & (x < -34) & (y >= -20) & (y < -16) & (z >= 4) & (z < 8)  # |x| > 32
    dark[_vox(20, 20, 10)] = True  # one voxel in the box: too small for a ventricle
    dark[_vox(20, 20, 30)] = True  # dark and white matter
    dark[_vox(-20, -50, -24)] = True  # dark in the cerebellum
    aal = np.where((z < -20) & (y < -40), 95, 0).astype(np.int16)
    aal[(z < -20) & (y >= -40) & (y < -30)] = 120  # an AAL label outside the cerebellum
    return brain, wm, dark, aal


def test_compose_labels_paints_the_regions_of_the_table():
    brain, wm, dark, aal = _inputs()
    lab = A.compose_labels(brain, wm, dark, aal, AFFINE)
    assert lab.dtype == np.int16 and lab.shape == SHAPE
    assert not lab[~brain].any()
    expected = {
        (-20, 10, 0): L.LEFT_CORTEX,
        (20, 10, 0): L.RIGHT_CORTEX,
        (-20, 10, 30): L.LEFT_WM,
        (20, 10, 30): L.RIGHT_WM,
        (-4, -10, 8): L.LEFT_LAT_VENT,  # the dark block in the box, by hemisphere
        (4, -10, 8): L.RIGHT_LAT_VENT,
        (-36, -18, 6): L.CSF,  # dark, outside the box
        (20, 20, 10): L.CSF,  # dark, in the box, under the smallest ventricle
        (20, 20, 30): L.RIGHT_WM,  # white matter is painted over CSF
        (-20, -50, -24): L.LEFT_CEREBELLUM_CORTEX,  # the cerebellum too
        (20, -50, -24): L.RIGHT_CEREBELLUM_CORTEX,
        (-20, -50, -34): L.LEFT_CEREBELLUM_WM,
        (20, -50, -34): L.RIGHT_CEREBELLUM_WM,
        (20, -36, -34): L.RIGHT_WM,  # AAL 120 is not cerebellum
    }
    got = {p: int(lab[_vox(*p)]) for p in expected}
    assert got == expected
    codes = {c for _, left, right in A.LABEL_RULE for c in (left, right)}
    assert set(np.unique(lab)) <= codes | {0}


def test_the_ventricle_size_rule_is_in_mm3():
    """The dark block of 640 voxels is a ventricle at 2 mm (above) and not at 0.5 mm (80 mm³)."""
    brain, wm, dark, aal = _inputs()
    fine = AFFINE.copy()
    fine[:3, :3] /= 4.0  # the grid now spans −40…−20.5 mm in x: keep the block in the box
    fine[:3, 3] = (-8.0, -20.0, 0.0)
    lab = A.compose_labels(brain, np.zeros_like(wm), dark, aal, fine)
    assert not np.isin(lab, L.REGIONS["lateral_ventricles"]).any()
    assert A.MIN_VENTRICLE_MM3 == 400.0


def test_the_table_sets_the_painting_order(monkeypatch):
    brain, wm, dark, aal = _inputs()
    rule = A.LABEL_RULE
    # the same table with the brain painted last: every brain voxel is cortex
    monkeypatch.setattr(A, "LABEL_RULE", rule[1:] + rule[:1])
    lab = A.compose_labels(brain, wm, dark, aal, AFFINE)
    assert set(np.unique(lab[brain])) == {L.LEFT_CORTEX, L.RIGHT_CORTEX}
    # other codes in the table: the labels follow them
    swapped = tuple((name, right, left) for name, left, right in rule)
    monkeypatch.setattr(A, "LABEL_RULE", swapped)
    flipped = A.compose_labels(brain, wm, dark, aal, AFFINE)
    assert flipped[_vox(-20, 10, 30)] == L.RIGHT_WM and flipped[_vox(20, 10, 0)] == L.LEFT_CORTEX


def test_cerebellum_box_stands_in_for_the_atlas():
    brain = np.ones(SHAPE, bool)
    box = A.cerebellum_box(AFFINE, SHAPE, brain)
    assert box.dtype == np.int16 and set(np.unique(box)) == {0, A.AAL_CEREBELLUM[0]}
    assert box[_vox(10, -50, -30)] == A.AAL_CEREBELLUM[0]
    assert box[_vox(10, -30, -30)] == 0 and box[_vox(10, -50, -10)] == 0
    assert not A.cerebellum_box(AFFINE, SHAPE, np.zeros(SHAPE, bool)).any()
