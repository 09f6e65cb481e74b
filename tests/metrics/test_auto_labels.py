"""``evaluate paired`` without ``--labels``: automatic labels checked against the built-in cohort's.

The cohort ships true FreeSurfer-coded label maps, so the automatic regions can be scored by
Dice. One subject at 3 mm and one command run serve both slow tests here (building the
subject and the segmentation plus registration took 150 s and 60 s on a 2-core machine with
a load average of 10; a fraction of that on an idle one).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from realdeal.cli import main
from realdeal.data.anatomy import foreground
from realdeal.data.cohort import MRICRON_DIR, CohortConfig, build_cohort
from realdeal.data.io import load_volume
from realdeal.data.labels import REGIONS, region_mask
from realdeal.data.segment import CSF_CLASS, WM_CLASS, source_note, tissue_classes
from realdeal.metrics import tables as T
from realdeal.metrics.phantom import make_phantom
from realdeal.metrics.sharpness import SharpnessConfig
from realdeal.metrics.suite import PairedConfig, labels_note, paired_subject

HAVE_AAL = (MRICRON_DIR / "aal.nii.gz").exists()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A 1-subject cohort scaled to [-1, 1], a blurred candidate, and the command's output."""
    root = tmp_path_factory.mktemp("auto")
    build_cohort(root / "cohort", CohortConfig(n_subjects=1, spacing=3.0, workers=1))
    (root / "orig").mkdir()
    (root / "blur").mkdir()
    img = nib.load(str(root / "cohort" / "sub-000_T1w.nii.gz"))
    x = np.asarray(img.dataobj, dtype=np.float32)
    x = np.clip(x / np.percentile(x[x > 0], 99.5), 0, 1) * 2 - 1  # background −1, as prepared
    nib.save(nib.Nifti1Image(x, img.affine), str(root / "orig" / "sub-000.nii.gz"))
    blurred = np.where(x > -1, ndimage.gaussian_filter(x, 1.0), -1).astype(np.float32)
    nib.save(nib.Nifti1Image(blurred, img.affine), str(root / "blur" / "sub-000.nii.gz"))
    out = root / "out"
    argv = ["-q", "evaluate", "paired", "--originals", str(root / "orig")]
    argv += ["--candidate", f"blur={root / 'blur'}", "--out", str(out), "--no-lpips"]
    argv += ["--patches", "10", "--patch-size", "16", "--bootstrap", "20", "--workers", "1"]
    rc = main(argv)
    return {"rc": rc, "out": out, "truth": root / "cohort" / "sub-000_dseg.nii.gz", "x": x}


@pytest.mark.slow
def test_command_without_labels_runs_and_says_where_regions_came_from(evaluated):
    assert evaluated["rc"] == 0
    out = evaluated["out"]
    md = (out / "tables.md").read_text()
    assert "labels: automatic — " in md and "dipy HMRF" in md and "--labels" not in md
    assert md.count("labels: automatic") >= 3  # under every table, not once
    assert "KL WM" in md and "KL ventricles" in md and "HOG whole brain" in md
    assert ("HOG cerebellum" in md) == HAVE_AAL
    if not HAVE_AAL:
        assert "cerebellum skipped: AAL atlas not found" in md
    cfg = json.loads((out / "results.json").read_text())["config"]
    assert cfg["labels"] == "automatic" and cfg["labels_note"] in md
    lab = load_volume(out / "labels" / "sub-000.nii.gz", kind="label")
    assert lab.shape == evaluated["x"].shape
    assert set(np.unique(lab.data)) <= {0, 2, 3, 4, 7, 8, 24, 41, 42, 43, 46, 47}


@pytest.mark.slow
def test_automatic_regions_match_the_cohort_labels(evaluated):
    auto = load_volume(evaluated["out"] / "labels" / "sub-000.nii.gz", kind="label").data
    truth = load_volume(evaluated["truth"], kind="label").data
    dice = {r: _dice(region_mask(auto, r), region_mask(truth, r)) for r in ("brain", *REGIONS)}
    # measured at 3 mm: brain 0.96, white matter 0.84 (Colin27) / 0.81 (MNI152), ventricles
    # 0.75 / 0.68, cerebellum 0.89 / 0.91
    assert dice["brain"] > 0.9
    assert dice["white_matter"] > 0.75
    assert dice["lateral_ventricles"] > 0.5
    if HAVE_AAL:
        assert dice["cerebellum"] > 0.75


def brain_mask(x):
    """The automatic labels' brain: everything above the background."""
    return foreground(x, fraction=1e-6, top="max")


def test_brain_mask_is_the_foreground_above_background():
    img, _, lab = make_phantom((40, 48, 40), seed=1)
    for x in (img, img + 1.0):  # background −1 (prepared) or 0 (raw skull-stripped)
        mask = brain_mask(x)
        assert mask[lab > 0].all()  # the phantom's one-voxel blurred rim is foreground too
        assert _dice(mask, lab > 0) > 0.9


def test_tissue_classes_are_deterministic_and_ordered():
    img, _, lab = make_phantom((40, 48, 40), seed=3)
    brain = brain_mask(img)
    a, b = tissue_classes(img, brain), tissue_classes(img, brain)
    assert np.array_equal(a, b) and not a[~brain].any()
    wm, vent = np.isin(lab, REGIONS["white_matter"]), np.isin(lab, REGIONS["lateral_ventricles"])
    assert (a[wm] == WM_CLASS).mean() > 0.9 and (a[vent] == CSF_CLASS).mean() > 0.9


def test_regions_missing_from_automatic_labels_leave_their_metrics_out():
    img, _, lab = make_phantom((40, 48, 40), seed=2)
    lab = np.where(np.isin(lab, REGIONS["cerebellum"]), 3, lab)  # as without the AAL atlas
    cfg = PairedConfig(
        lpips=False, psnr_ssim=False, sharpness=SharpnessConfig(patch_size=16, n_patches=10)
    )
    recs = paired_subject("s", img, lab, {"blur": ndimage.gaussian_filter(img, 1.0)}, cfg)
    metrics = {r["metric"] for r in recs}
    assert "hog_cerebellum" not in metrics
    assert {"hog_brain", "kl_white_matter", "kl_lateral_ventricles", "sharpness"} <= metrics


def test_labels_note_names_the_source_and_what_was_skipped():
    from realdeal.metrics.subjects import SubjectSet

    given = labels_note(SubjectSet("labels", {}, "eval/labels"), {})
    assert given == "labels: FreeSurfer maps from --labels (eval/labels)"
    why = "AAL atlas not found (x)"
    note = labels_note(None, {"a": {"cerebellum": why}, "b": {"cerebellum": why}, "c": {}})
    assert note.startswith(source_note()) and f"cerebellum skipped: {why} (2/3 subjects)" in note
    table = T.paired_markdown(
        [{"set": "x", "metric": "psnr", "axis": "", "mean": 1.0, "ci_low": 0.9, "ci_high": 1.1}],
        ["x"],
        note,
    )
    assert note in table and "percentile bootstrap" in table
