"""realdeal prepare: manifest, geometry, determinism, split, label alignment, bad input."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from realdeal.cli import main
from realdeal.data.dataset import (
    PrepareConfig,
    PreparedDataset,
    prepare_dataset,
    split_subjects,
    subject_ids,
)
from realdeal.data.io import load_volume
from realdeal.errors import InputError

from synthetic import phantom, save_nifti

CFG = PrepareConfig(shape=(32, 32, 32), window=8)
LABELS = "{dir}/{id}_dseg.nii.gz"


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_prepare_writes_a_complete_dataset(raw_folder, tmp_path):
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "prep", CFG, labels=LABELS)
    assert len(ds) == 6
    assert ds.ids() == [f"s{i:02d}" for i in range(6)]
    assert len(ds.ids("test")) == 1 and len(ds.ids("train")) == 5  # round(6 * 0.2)
    meta = json.loads((ds.root / "dataset.json").read_text())
    assert meta["format"] == "realdeal-prepared" and meta["shape"] == [32, 32, 32]
    for sid in ds.ids():
        img = ds.load_image(sid)
        assert img.shape == (32, 32, 32)
        assert img.data.min() == -1.0 and img.data.max() <= 1.0
        mask = ds.load_mask(sid)
        assert (img.data[~mask] == -1.0).all()
        frac = ds.load_fraction(sid)
        assert frac.shape == (25, 25, 25)
        assert frac.max() == pytest.approx(1.0, abs=1e-3)
        rec = ds.record(sid)
        assert rec.source.endswith(f"{sid}_T1w.nii.gz")
    assert (ds.root / "subjects.csv").read_text().startswith("subject,split,source")


def test_labels_stay_aligned_with_their_image(raw_folder, tmp_path):
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "prep", CFG, labels=LABELS)
    for sid in ds.ids():
        img, lab = ds.load_image(sid).data, ds.load_label(sid).data
        np.testing.assert_array_equal(lab > 0, ds.load_mask(sid))
        # Phantom: ventricles (4/43) are the darkest tissue, white matter (2/41) the brightest.
        vent, wm = np.isin(lab, (4, 43)), np.isin(lab, (2, 41))
        assert img[vent].max() < img[wm].min()
        np.testing.assert_array_equal(ds.load_image(sid).affine, ds.load_label(sid).affine)


def test_same_inputs_same_output(raw_folder, tmp_path):
    a = prepare_dataset(raw_folder, tmp_path / "a", CFG, labels=LABELS)
    b = prepare_dataset(raw_folder, tmp_path / "b", CFG, labels=LABELS)
    ja, jb = (json.loads((d.root / "dataset.json").read_text()) for d in (a, b))
    for j in (ja, jb):
        for s in j["subjects"]:
            s.pop("source"), s.pop("label_source")
    assert ja == jb
    for sid in a.ids():
        assert a.image_path(sid).read_bytes() == b.image_path(sid).read_bytes()
        assert np.array_equal(a.load_fraction(sid), b.load_fraction(sid))


def test_folder_input_skips_label_files_only_with_glob(raw_folder, tmp_path):
    # A folder holds both images and label maps; use a glob to pick the images.
    ds = prepare_dataset(str(raw_folder / "*_T1w.nii.gz"), tmp_path / "p", CFG)
    assert ds.load_label(ds.ids()[0]) is None


def test_split_is_deterministic_and_seeded():
    ids = [f"x{i}" for i in range(20)]
    a, b = split_subjects(ids, 0.2, seed=3), split_subjects(list(reversed(ids)), 0.2, seed=3)
    assert a == b and sum(v == "test" for v in a.values()) == 4
    assert split_subjects(ids, 0.2, seed=4) != a


def test_split_csv(raw_folder, tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_text(
        "subject,split\n" + "".join(f"s{i:02d},{'test' if i < 2 else 'train'}\n" for i in range(6))
    )
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "p", CFG, split_csv=csv)
    assert ds.ids("test") == ["s00", "s01"]
    csv.write_text("subject,split\ns00,test\n")
    with pytest.raises(InputError, match="missing from the split CSV"):
        prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "q", CFG, split_csv=csv)


def test_hcp_style_ids_from_folders(tmp_path):
    files = [
        tmp_path / s / "T1w" / "T1w_acpc_dc_restore_brain.nii.gz" for s in ("100307", "100408")
    ]
    assert subject_ids(files) == ["100307", "100408"]


def test_source_space_round_trip_with_resampling(raw_folder, tmp_path):
    cfg = PrepareConfig(shape=(24, 24, 24), window=8, spacing=(2.0, 2.0, 2.0))
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "p", cfg, labels=LABELS)
    sid = ds.ids()[0]
    assert ds.spacing == pytest.approx((2.0, 2.0, 2.0))
    out = ds.save_source_space(sid, ds.load_image(sid).data, tmp_path / "back.nii.gz")
    src = nib.load(ds.record(sid).source)
    back = nib.load(str(out))
    assert back.shape == src.shape
    np.testing.assert_array_equal(back.affine, src.affine)
    # Intensities inside the brain come back close to the source (blurred by resampling twice).
    s, b = np.asarray(src.dataobj), np.asarray(back.dataobj)
    lab = np.asarray(nib.load(ds.record(sid).label_source).dataobj)
    wm = np.isin(lab, (2, 41))
    assert abs(np.median(b[wm]) - np.median(s[wm])) < 0.05 * np.median(s[wm])


def test_derived_volumes(raw_folder, tmp_path):
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "p", CFG)
    sid = ds.ids()[0]
    assert not ds.has_derived("reconstructions", sid)
    with pytest.raises(InputError, match="missing reconstructions"):
        ds.load_derived("reconstructions", sid)
    arr = ds.load_image(sid).data * 0.5
    ds.save_derived("reconstructions", sid, arr)
    got = ds.load_derived("reconstructions", sid)
    np.testing.assert_array_equal(got.data, arr)
    np.testing.assert_array_equal(got.affine, ds.load_image(sid).affine)


# --- bad input: one line naming the file, exit != 0, nothing half-written -----------------


def _run_cli(args, capsys):
    code = main(["-q", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_output_folder_not_a_dataset(raw_folder, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _run_cli(
        [
            "prepare",
            str(raw_folder / "*_T1w.nii.gz"),
            "-o",
            str(out),
            "--shape",
            "32",
            "32",
            "32",
            "--window",
            "8",
        ],
        capsys,
    )
    assert (
        code == 2 and str(out) in err and "not a prepared dataset" in err and err.count("\n") == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_cli_existing_dataset_needs_overwrite(raw_folder, tmp_path, capsys):
    args = [
        "prepare",
        str(raw_folder / "*_T1w.nii.gz"),
        "-o",
        str(tmp_path / "p"),
        "--shape",
        "32",
        "32",
        "32",
        "--window",
        "8",
    ]
    assert _run_cli(args, capsys)[0] == 0
    code, err = _run_cli(args, capsys)
    assert code == 2 and "--overwrite" in err
    assert _run_cli([*args, "--overwrite"], capsys)[0] == 0
    assert PreparedDataset(tmp_path / "p").ids()


@pytest.mark.parametrize(
    "problem", ["nan", "label-shape", "label-affine", "not-nifti", "empty-labels"]
)
def test_cli_bad_subject_leaves_nothing(raw_folder, tmp_path, capsys, problem):
    bad = raw_folder / "s03_T1w.nii.gz"
    lab = raw_folder / "s03_dseg.nii.gz"
    img, labels = phantom(seed=3)
    if problem == "nan":
        img[3, 3, 3] = np.nan
        save_nifti(bad, img)
    elif problem == "label-shape":
        save_nifti(lab, labels[:-1])
    elif problem == "label-affine":
        save_nifti(lab, labels, np.diag([1.4, 1.5, 1.5, 1.0]))
    elif problem == "not-nifti":
        bad.write_bytes(b"this is not an image")
    elif problem == "empty-labels":
        save_nifti(lab, np.zeros_like(labels))
    out = tmp_path / "p"
    code, err = _run_cli(
        [
            "prepare",
            str(raw_folder / "*_T1w.nii.gz"),
            "-o",
            str(out),
            "--labels",
            LABELS,
            "--shape",
            "32",
            "32",
            "32",
            "--window",
            "8",
        ],
        capsys,
    )
    assert code == 2
    assert "s03_" in err and err.count("\n") == 0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".p")] == []


def test_cli_missing_input(tmp_path, capsys):
    code, err = _run_cli(
        ["prepare", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "p")], capsys
    )
    assert code == 2 and "nope.nii.gz: file not found" in err


def test_prepared_dataset_rejects_other_folders(tmp_path):
    with pytest.raises(InputError, match="not a prepared dataset"):
        PreparedDataset(tmp_path)
    (tmp_path / "dataset.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="format"):
        PreparedDataset(tmp_path)


def test_prepared_image_matches_source_voxels(raw_folder, tmp_path):
    """Without resampling every brain voxel is the source voxel, scaled: check against load_volume."""
    ds = prepare_dataset(raw_folder / "*_T1w.nii.gz", tmp_path / "p", CFG, labels=LABELS)
    sid = ds.ids()[2]
    src = load_volume(ds.record(sid).source)
    prepared = ds.load_image(sid)
    # World position of source voxel (10, 12, 9) maps to a prepared voxel holding its scaled value.
    world = src.affine @ [10, 12, 9, 1]
    ijk = np.rint(np.linalg.inv(prepared.affine) @ world).astype(int)[:3]
    assert prepared.data[tuple(ijk)] == pytest.approx(
        ds.scaler.forward(src.data[10, 12, 9]), abs=1e-6
    )
