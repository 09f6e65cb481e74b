"""Intensity modes for your own scans: scaled, raw (stored pair), percentile, auto; refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from realdeal.data.intensity import (
    ModelSpace,
    ScanOptions,
    load_intensity_mapping,
    looks_scaled,
    resolve_intensity,
    scan_to_model_space,
)
from realdeal.data.io import Volume
from realdeal.data.transforms import IntensityScaler
from realdeal.errors import InputError

from synthetic import phantom

DEMO = Path(__file__).resolve().parents[2] / "src" / "realdeal" / "demo_checkpoints"


@pytest.fixture
def scan():
    img, lab = phantom(shape=(24, 28, 22), seed=3)
    return img, lab > 0


def test_looks_scaled_is_the_model_range(caplog):
    x = np.full((8, 8, 8), -1.0, np.float32)
    x[2:6, 2:6, 2:6] = 0.4
    assert looks_scaled(x) and not looks_scaled(x * 1.5)
    assert looks_scaled(x * 0.4 - 0.1)  # an undertrained model's output never reaches −1
    with caplog.at_level(logging.WARNING):  # a [0, 1] scan is in range, but auto says so
        assert resolve_intensity((x + 1) / 2, x > 0, "auto").mode == "scaled"
    assert "--intensity percentile" in caplog.text


def test_auto_uses_the_stored_pair_when_it_fits(scan):
    img, brain = scan
    stored = IntensityScaler.fit([img[brain]])
    space = resolve_intensity(img, brain, "auto", stored)
    assert space.mode == "raw" and space.scaler == stored


def test_auto_falls_back_to_the_scans_own_percentiles_in_other_units(scan, caplog):
    img, brain = scan
    stored = IntensityScaler.fit([img[brain]])
    other = img * 0.1  # the same anatomy in other units: the stored pair puts it below −1
    with caplog.at_level(logging.WARNING):
        space = resolve_intensity(other, brain, "auto", stored, percentiles=(1.0, 99.0))
    assert space.mode == "percentile"
    lo, hi = np.percentile(other[brain], [1.0, 99.0])
    assert space.scaler.low == pytest.approx(lo) and space.scaler.high == pytest.approx(hi)
    assert "other units" in caplog.text
    y = space.forward(other)
    assert -0.9 < float(np.median(y[brain])) < 0.9  # the brain is inside model space now


def test_explicit_raw_refuses_other_units_and_names_the_fix(scan):
    img, brain = scan
    stored = IntensityScaler.fit([img[brain]])
    with pytest.raises(InputError, match="other units.*--intensity percentile"):
        resolve_intensity(img * 0.1, brain, "raw", stored, path="scan.nii.gz")
    with pytest.raises(InputError, match="does not hold"):
        resolve_intensity(img, brain, "raw", None)


def test_scaled_refuses_data_outside_minus_one_one(scan):
    img, brain = scan
    with pytest.raises(InputError, match="scaled needs values in"):
        resolve_intensity(img, brain, "scaled")
    x = np.where(brain, 0.2, -1.0).astype(np.float32)
    assert resolve_intensity(x, brain, "scaled").mode == "scaled"


def test_no_mapping_fits_a_constant_brain(scan):
    img, brain = scan
    flat = np.where(brain, 5.0, 0.0).astype(np.float32)
    with pytest.raises(InputError, match="other units.*no mapping fits"):
        resolve_intensity(flat, brain, "auto", IntensityScaler.fit([img[brain]]))


def test_restore_maps_back_and_keeps_the_background_of_a_raw_scan(scan):
    img, brain = scan
    vol = Volume(img, np.diag([2.0, 2.0, 2.0, 1.0]))
    s = scan_to_model_space(vol, ScanOptions(intensity="percentile"))
    assert s.space.mode == "percentile" and s.data.min() >= -1 and s.data.max() <= 1
    back = s.restore(s.data)
    inside = s.brain & (img > s.space.scaler.low) & (img < s.space.scaler.high)  # not clipped
    assert np.allclose(back[inside], img[inside], rtol=1e-4, atol=1e-2)
    assert np.array_equal(back[~s.brain], img[~s.brain])  # background 0 stays 0


def test_model_space_round_trip_as_dict():
    d = ModelSpace("percentile", IntensityScaler(10.0, 20.0), "asked for").to_dict()
    assert d == {"mode": "percentile", "scaler": {"low": 10.0, "high": 20.0}, "reason": "asked for"}


def test_mapping_from_a_refiner_checkpoint_and_refusal_without_one():
    scaler, pct = load_intensity_mapping(DEMO / "refiner.pt")
    assert scaler.low == pytest.approx(224.7548, rel=1e-5) and pct == (0.5, 99.5)
    # the demo autoencoder names a training dataset that no longer exists
    with pytest.raises(InputError, match="holds no intensity mapping"):
        load_intensity_mapping(DEMO / "autoencoder.pt")


def test_prepare_reuses_a_saved_mapping_and_refuses_other_units(raw_folder, tmp_path):
    from realdeal.data.dataset import PrepareConfig, prepare_dataset

    from synthetic import save_nifti

    cfg = PrepareConfig(shape=(24, 32, 24), window=16)
    first = prepare_dataset(str(raw_folder / "*_T1w.nii.gz"), tmp_path / "a", cfg)
    two = tmp_path / "two"
    two.mkdir()
    for f in sorted(raw_folder.glob("s0[01]_T1w.nii.gz")):
        (two / f.name).write_bytes(f.read_bytes())
    again = prepare_dataset(str(two), tmp_path / "b", cfg, intensity_from=first.root)
    assert again.scaler == first.scaler  # reused, not refitted on two subjects
    assert again.meta["scaler_source"] == str(first.root)

    import nibabel as nib

    img = nib.load(two / "s00_T1w.nii.gz")
    save_nifti(two / "s00_T1w.nii.gz", np.asarray(img.dataobj) * 0.01, img.affine)
    with pytest.raises(InputError, match="s00_T1w.*other units"):
        prepare_dataset(str(two), tmp_path / "c", cfg, intensity_from=first.root)
