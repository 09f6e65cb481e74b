"""The built-in cohort: determinism, labels, noise level, fallback without Colin27."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from realdeal.data import labels as L
from realdeal.data.cohort import MRICRON_DIR, CohortConfig, build_cohort, wm_noise_sigma
from realdeal.data.io import load_volume
from realdeal.errors import ConfigError, InputError

HAVE_COLIN = (MRICRON_DIR / "ch2bet.nii.gz").exists()
SMALL = CohortConfig(n_subjects=2, spacing=3.0, workers=1)


def _arrays(folder, n):
    return [
        (
            load_volume(folder / f"sub-{i:03d}_T1w.nii.gz").data,
            load_volume(folder / f"sub-{i:03d}_dseg.nii.gz", kind="label").data,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "cohort"
    build_cohort(out, SMALL)
    return out


@pytest.mark.slow
def test_cohort_files_shapes_and_labels(cohort):
    meta = json.loads((cohort / "cohort.json").read_text())
    assert meta["format"] == "realdeal-cohort" and len(meta["subjects"]) == 2
    for img, lab in _arrays(cohort, 2):
        assert img.shape == SMALL.grid_shape() == (64, 80, 64)  # 192×224×192 mm rounded up to 16
        assert (img[lab == 0] == 0).mean() > 0.97  # skull-stripped: background is zero
        for region in ("white_matter", "lateral_ventricles", "cerebellum"):
            assert L.region_mask(lab, region).sum() > 20, region
        wm, vent = L.region_mask(lab, "white_matter"), L.region_mask(lab, "lateral_ventricles")
        assert np.median(img[vent]) < 0.6 * np.median(img[wm])  # T1w: ventricles dark
        left = np.isin(lab, (L.LEFT_WM,))
        xs = np.argwhere(left)[:, 0].mean()
        assert xs < np.argwhere(np.isin(lab, (L.RIGHT_WM,)))[:, 0].mean()  # RAS: left has smaller x


@pytest.mark.slow
def test_same_seed_same_cohort_other_seed_differs(cohort, tmp_path):
    again = build_cohort(tmp_path / "again", SMALL).folder
    for (a, la), (b, lb) in zip(_arrays(cohort, 2), _arrays(again, 2), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    other = build_cohort(
        tmp_path / "other", CohortConfig(n_subjects=1, spacing=3.0, workers=1, seed=1)
    ).folder
    assert not np.array_equal(_arrays(other, 1)[0][0], _arrays(cohort, 1)[0][0])


@pytest.mark.slow
def test_parallel_build_equals_serial(cohort, tmp_path):
    par = build_cohort(tmp_path / "par", CohortConfig(n_subjects=2, spacing=3.0, workers=2)).folder
    for (a, _), (b, _) in zip(_arrays(cohort, 2), _arrays(par, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_first_subject_grows_the_cohort(cohort, tmp_path):
    """Subjects from ``first_subject`` on are those a bigger cohort of the same seed has at
    those indices (files bit for bit, records alike), so a cohort grows with new subjects."""
    grown = build_cohort(
        tmp_path / "grown", CohortConfig(n_subjects=1, first_subject=1, spacing=3.0, workers=1)
    )
    assert [r["id"] for r in grown.subjects] == ["sub-001"]
    assert not (grown.folder / "sub-000_T1w.nii.gz").exists()
    (x, lab) = _arrays(cohort, 2)[1]
    y = load_volume(grown.folder / "sub-001_T1w.nii.gz").data
    assert np.array_equal(x, y)
    assert np.array_equal(lab, load_volume(grown.folder / "sub-001_dseg.nii.gz", kind="label").data)
    meta = json.loads((cohort / "cohort.json").read_text())
    assert grown.subjects[0] == meta["subjects"][1]
    with pytest.raises(ConfigError, match="first_subject"):
        CohortConfig(first_subject=-1)


def test_noise_matches_target(cohort):
    meta = json.loads((cohort / "cohort.json").read_text())
    for s in meta["subjects"]:
        assert s["noise_sigma_measured"] == pytest.approx(s["noise_sigma_target"], rel=0.25)
        lo, hi = 1 - SMALL.noise_jitter, 1 + SMALL.noise_jitter
        assert lo * SMALL.target_sigma() <= s["noise_sigma_target"] <= hi * SMALL.target_sigma()


@pytest.mark.skipif(not HAVE_COLIN, reason="Colin27 (Debian mricron-data) not installed")
def test_documented_colin_noise_is_what_we_measure():
    """The 1 mm noise constants in the docs are re-measured from the real files."""
    from realdeal.data.cohort import (
        COLIN_SIGMA_REL_1MM,
        MNI_STRUCTURE_FLOOR_1MM,
        _load_colin,
        _load_mni,
    )

    def rel(loader):
        x, lab, _ = loader()
        wm = L.region_mask(lab, "white_matter")
        return wm_noise_sigma(x, wm) / float(np.median(x[wm]))

    floor = rel(lambda: _load_mni(MRICRON_DIR))
    assert floor == pytest.approx(MNI_STRUCTURE_FLOOR_1MM, rel=0.1)
    colin = rel(lambda: _load_colin(MRICRON_DIR))
    assert np.sqrt(colin**2 - floor**2) == pytest.approx(COLIN_SIGMA_REL_1MM, rel=0.1)


@pytest.mark.slow
def test_falls_back_to_mni_without_colin(tmp_path, caplog):
    cfg = CohortConfig(n_subjects=1, spacing=4.0, workers=1, colin_dir=str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING):
        build_cohort(tmp_path / "c", cfg)
    assert "MNI152 alone" in caplog.text
    meta = json.loads((tmp_path / "c" / "cohort.json").read_text())
    assert meta["subjects"][0]["source"] == "mni152"
    lab = load_volume(tmp_path / "c" / "sub-000_dseg.nii.gz", kind="label").data
    assert L.region_mask(lab, "cerebellum").sum() > 0  # fallback cerebellum rule
    with pytest.raises(InputError, match="Colin27 not found"):
        build_cohort(
            tmp_path / "d",
            CohortConfig(n_subjects=1, spacing=4.0, sources="colin27", colin_dir=str(tmp_path)),
        )


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a realdeal cohort"):
        build_cohort(tmp_path, SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_noise_seed_redraws_only_the_scanner_noise(cohort):
    """Another noise seed is another scan of the same subject: same anatomy, labels and noise
    level, independent noise (what ``benchmarks/oracle_refiner.py`` scores as a perfect refiner);
    no seed reproduces the cohort's file."""
    from realdeal.data.cohort import _subject, load_sources

    sources = load_sources(SMALL)
    own, lab, _ = _subject(sources[0], SMALL, 0)
    np.testing.assert_allclose(own, _arrays(cohort, 1)[0][0], atol=1e-4)
    other, lab2, info = _subject(sources[0], SMALL, 0, noise_seed=12345)
    np.testing.assert_array_equal(lab, lab2)
    wm = L.region_mask(lab, "white_matter")
    diff = (other - own)[wm]
    assert np.abs(diff).mean() > 0.5 * info["noise_sigma_added"] * np.median(own[wm])
    # a new draw at the same level, around the same mean
    assert 0.5 < wm_noise_sigma(other, wm) / wm_noise_sigma(own, wm) < 2.0
    assert abs(np.mean(other[wm]) - np.mean(own[wm])) < 0.01 * np.median(own[wm])


@pytest.mark.slow
def test_wider_variation_ventricles_and_coarse_shape():
    """``ventricle_scale`` enlarges or shrinks the lateral ventricles of the same subject, and the
    coarse elastic field changes its shape; off by default (the cohort above is unchanged)."""
    from realdeal.data.cohort import _subject, load_sources

    def subject(**kw):
        cfg = CohortConfig(n_subjects=1, spacing=3.0, workers=1, **kw)
        return _subject(load_sources(cfg)[0], cfg, 0)

    base_img, base_lab, _ = subject()
    vent = {
        s: L.region_mask(subject(ventricle_scale=(s, s))[1], "lateral_ventricles").sum()
        for s in (0.7, 1.6)
    }
    n0 = L.region_mask(base_lab, "lateral_ventricles").sum()
    assert vent[0.7] < 0.75 * n0 and vent[1.6] > 1.3 * n0, (vent, n0)
    coarse = subject(coarse_elastic_spacing_mm=48.0, coarse_elastic_magnitude_mm=(4.0, 4.0))[0]
    assert not np.array_equal(coarse, base_img)
    assert abs((coarse > 0).mean() - (base_img > 0).mean()) < 0.25 * (base_img > 0).mean()
    with pytest.raises(Exception, match="ventricle_scale"):
        CohortConfig(ventricle_scale=(1.5, 1.0))
