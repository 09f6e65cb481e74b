"""Your own scans from file to report (docs/own-scans.md), and the commands' refusals.

The end-to-end test runs the commands of docs/own-scans.md on Colin27 with skull (Debian ``mricron-data``,
1 mm, its own intensity units) through the shipped demo models; it refines a crop (two thirds
of the brain, 1 step) to stay fast.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from realdeal.cli import main

from synthetic import save_nifti

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
CH2BET = CH2.with_name("ch2bet.nii.gz")
DEMO = Path(__file__).resolve().parents[1] / "src" / "realdeal" / "demo_checkpoints"


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_bad_inputs_fail_before_any_model_loads(tmp_path, capsys):
    missing = tmp_path / "missing.nii.gz"
    # the checkpoint does not exist either: the input is checked first
    args = ["refine", str(missing), "-o", str(tmp_path / "out"), "--checkpoint", "nope.pt"]
    assert main(args) == 2
    assert "missing.nii.gz: file not found" in _err(capsys)
    assert (
        main(["reconstruct", str(missing), "-o", str(tmp_path / "o"), "--autoencoder", "nope.pt"])
        == 2
    )
    assert "missing.nii.gz: file not found" in _err(capsys)
    assert main(["reconstruct", "--autoencoder", "nope.pt"]) == 2
    assert "either input files" in _err(capsys)


def test_a_head_is_refused_with_the_fix(tmp_path, capsys):
    idx = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1)
    d = np.sqrt((((idx - 32) * 3.0) ** 2).sum(-1))
    head = np.where(d < 90, 800.0, 0.0).astype(np.float32)  # 3 L of foreground
    src = save_nifti(tmp_path / "head.nii.gz", head, np.diag([3.0, 3.0, 3.0, 1.0]))
    out = tmp_path / "recon.nii.gz"
    assert (
        main(
            ["reconstruct", str(src), "-o", str(out), "--autoencoder", str(DEMO / "autoencoder.pt")]
        )
        == 2
    )
    err = _err(capsys)
    assert "head.nii.gz" in err and "head with skull" in err and "realdeal skullstrip" in err
    assert not out.exists()


def _crop(src: Path, dst: Path, xs: slice) -> Path:
    img = nib.load(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img.slicer[xs], dst)  # nibabel moves the affine's origin with the crop
    return dst


@pytest.mark.slow  # about a minute of CPU (registration, a 64×108×90 refine, the metrics)
@pytest.mark.skipif(not CH2.exists(), reason=f"{CH2} absent (Debian package mricron-data)")
def test_raw_head_scan_from_file_to_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ae, ref = "demo:autoencoder", "demo:refiner"  # as docs/own-scans.md names them
    # 1. skull strip at the demo models' 2 mm (the first command of docs/own-scans.md)
    assert main(["-q", "skullstrip", str(CH2), "-o", "brain", "--spacing", "2", "--labels"]) == 0
    brain = nib.load("brain/ch2.nii.gz")
    assert np.allclose(np.diag(brain.affine)[:3], 2.0)
    centre = lambda img: img.affine @ np.r_[(np.array(img.shape) - 1) / 2.0, 1.0]  # noqa: E731
    assert np.allclose(centre(brain), centre(nib.load(CH2)), atol=1.0)  # same field of view
    # against Colin27's own brain mask (an independent reference), on the same 2 mm grid
    mask = np.asarray(nib.load("brain/masks/ch2.nii.gz").dataobj) > 0
    bet = nib.load(CH2BET)
    ref_mask = (
        np.asarray(bet.dataobj)[::2, ::2, ::2][: mask.shape[0], : mask.shape[1], : mask.shape[2]]
        > 0
    )
    dice = 2 * (mask & ref_mask).sum() / (mask.sum() + ref_mask.sum())
    assert dice > 0.9, dice
    # 2. reconstruct: raw units → the scan's own brain percentiles, written back in its units
    assert main(["-q", "reconstruct", "brain", "-o", "recon", "--autoencoder", ae]) == 0
    recon = nib.load("recon/ch2.nii.gz")
    assert np.array_equal(recon.affine, brain.affine) and recon.shape == brain.shape
    rec = json.loads(Path("recon/reconstruct.json").read_text())["volumes"][0]
    assert rec["intensity"]["mode"] == "percentile"
    r = np.asarray(recon.dataobj)
    assert np.all(r[~mask] == 0)  # the background stays the scan's background
    assert 0.5 * r[mask].mean() < np.asarray(brain.dataobj)[mask].mean() < 2 * r[mask].mean()
    # 3. refine a crop (64 of 90 voxels left to right: the sharpness metric's 64³ patch must
    # fit; 1 step) and evaluate the same crop of every set
    xs = slice(8, 72)
    for d in ("brain", "recon"):
        _crop(Path(d) / "ch2.nii.gz", Path("crop") / d / "ch2.nii.gz", xs)
    _crop(Path("brain/labels/ch2.nii.gz"), Path("crop/labels/ch2.nii.gz"), xs)
    assert (
        main(
            [
                "-q",
                "refine",
                "crop/recon",
                "-o",
                "crop/refined",
                "--checkpoint",
                ref,
                "--steps",
                "1",
            ]
        )
        == 0
    )
    refined = nib.load("crop/refined/ch2.nii.gz")
    assert np.array_equal(refined.affine, nib.load("crop/recon/ch2.nii.gz").affine)
    assert main(["-q", "evaluate", "paired", "--originals", "crop/brain", "--labels", "crop/labels",
                 "--candidate", "recon=crop/recon", "--candidate", "realdeal=crop/refined",
                 "--no-lpips", "--patches", "40", "--patch-size", "32", "--workers", "1",
                 "--out", "eval"]) == 0  # fmt: skip
    rows = list(csv.DictReader(open("eval/summary.csv")))
    values = [
        float(v) for row in rows for k, v in row.items() if k == "mean" and v not in ("", None)
    ]
    assert {row.get("set") for row in rows} >= {"recon", "realdeal"} and values
    assert all(math.isfinite(v) for v in values)
