"""``realdeal evaluate`` under torchrun: two CPU processes split the volumes, rank 0 gathers
their values and features and writes tables identical to one process's, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from realdeal.metrics.phantom import make_phantom
from test_torchrun import run_realdeal

from synthetic import save_nifti

SHAPE = (64, 72, 64)  # the smallest phantom the paired suite's 64³ sharpness windows fit
AFFINE = np.diag([2.5, 2.5, 2.5, 1.0])  # a head-sized field of view for the automatic labels
SMALL = ["--patches", "12", "--patch-size", "16", "--workers", "1"]
TABLES = {
    "paired": ("tables.md", "summary.csv", "per_subject.csv"),
    "unpaired": ("tables.md", "summary.csv", "per_subject.csv"),
    "memorization": ("tables.md", "per_subject.csv", "memorization.json"),
}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """Phantoms: originals (3) with labels, blurred and renoised versions, the same for the
    first two subjects only (``*-2``); held-out subjects (2); generated volumes (a near-copy of
    original 0 and a new subject)."""
    root = tmp_path_factory.mktemp("sets")
    names = ("originals", "labels", "blurred", "renoised", "held-out", "generated")
    dirs = {n: root / n for n in names} | {f"{n}-2": root / f"{n}-2" for n in names[:4]}
    for d in dirs.values():
        d.mkdir()

    def save(name: str, sid: str, data: np.ndarray) -> None:
        dtype = np.int16 if name == "labels" else np.float32
        save_nifti(dirs[name] / f"{sid}.nii.gz", data.astype(dtype), AFFINE)
        if name in names[:4] and sid in ("sub-00", "sub-01"):
            (dirs[f"{name}-2"] / f"{sid}.nii.gz").symlink_to(dirs[name] / f"{sid}.nii.gz")

    for i in range(3):
        img, clean, lab = make_phantom(SHAPE, noise=0.03, seed=i)
        noise = np.random.default_rng(10 + i).normal(0, 0.03, SHAPE)
        save("originals", f"sub-{i:02d}", img)
        save("labels", f"sub-{i:02d}", lab)
        save("blurred", f"sub-{i:02d}", ndimage.gaussian_filter(img, 1.0))
        save("renoised", f"sub-{i:02d}", clean + noise)
        if i == 0:
            save("generated", "gen-0", img + 0.2 * noise)
    for i in (3, 4):
        save("held-out", f"h-{i}", make_phantom(SHAPE, noise=0.03, seed=i)[0])
    save("generated", "gen-1", make_phantom(SHAPE, noise=0.03, seed=5)[0])
    return dirs


def _evaluate_both_ways(args: list[str], out: Path) -> tuple[str, str]:
    """Run ``realdeal evaluate ARGS`` under torchrun with 2 processes into ``out/two`` and as
    one process into ``out/one``; the two stdouts."""
    two = run_realdeal(["evaluate", *args, "--out", str(out / "two")], nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_realdeal(["evaluate", *args, "--out", str(out / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    return two.stdout, one.stdout


def _same_tables(mode: str, out: Path, stdout: str) -> None:
    """The tables of ``out/two`` equal those of ``out/one`` byte for byte, both folders hold the
    same files, and the tables were printed once (by rank 0)."""
    for name in TABLES[mode]:
        assert (out / "two" / name).read_bytes() == (out / "one" / name).read_bytes(), name
    assert sorted(p.name for p in (out / "two").iterdir()) == sorted(
        p.name for p in (out / "one").iterdir()
    )
    assert stdout.count("results written to") == 1
    assert (out / "two" / "tables.md").read_text().strip() in stdout


def _json_without_timings(out: Path) -> dict:
    """``out/results.json`` without what differs by design: timings, the process count and
    the output folder's name."""
    data = json.loads((out / "results.json").read_text().replace(str(out), "OUT"))
    data.pop("timings")
    assert data["config"].pop("processes") in (1, 2)
    return data


@pytest.mark.slow
def test_paired_under_torchrun_equals_one_process(sets, tmp_path):
    """Three subjects with their label maps, split unevenly (rank 0 takes two)."""
    args = ["paired", "--originals", str(sets["originals"]), "--labels", str(sets["labels"]),
            "--candidate", f"blurred={sets['blurred']}", "--candidate",
            f"renoised={sets['renoised']}", "--no-lpips", "--bootstrap", "50", *SMALL]  # fmt: skip
    two, _ = _evaluate_both_ways(args, tmp_path)
    _same_tables("paired", tmp_path, two)
    assert _json_without_timings(tmp_path / "two") == _json_without_timings(tmp_path / "one")
    per_subject = (tmp_path / "two" / "per_subject.csv").read_text()
    assert all(f"sub-0{i}" in per_subject for i in range(3))


@pytest.mark.slow
def test_each_rank_writes_the_automatic_labels_of_its_subjects(sets, tmp_path):
    """Without label maps each rank labels its own subject and writes the map into the shared
    output folder (checked to be shared first); rank 0 writes the tables. (Not compared with one
    process: dipy's registration and tissue classes can put a boundary voxel into the other
    class from one process to the next, and a label map equal to the voxel is not promised.)"""
    args = ["evaluate", "paired", "--originals", str(sets["originals-2"]), "--candidate",
            f"blurred={sets['blurred-2']}", "--no-lpips", "--bootstrap", "20", *SMALL,
            "--out", str(tmp_path / "two")]  # fmt: skip
    two = run_realdeal(args, nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        ["labels", *TABLES["paired"], "results.json"]
    )  # and no marker of the shared-folder check left behind
    labels = tmp_path / "two" / "labels"
    assert sorted(p.name for p in labels.iterdir()) == ["sub-00.nii.gz", "sub-01.nii.gz"]
    for f in labels.iterdir():
        codes = set(np.unique(np.asarray(nib.load(f).dataobj)))
        assert {2, 41, 4, 43} <= codes  # white matter and lateral ventricles, both sides
    config = json.loads((tmp_path / "two" / "results.json").read_text())["config"]
    assert config["labels"] == "automatic" and config["processes"] == 2
    assert two.stdout.count("results written to") == 1


@pytest.mark.slow
def test_unpaired_and_memorization_under_torchrun_equal_one_process(sets, tmp_path):
    """Unpaired patch statistics (9 feature tasks: the real set twice, two generated sets, split
    unevenly) and the memorisation check (8 volumes)."""
    args = ["unpaired", "--real", str(sets["originals"]), "--real-labels", str(sets["labels"]),
            "--generated", f"blurred={sets['blurred']}", "--generated",
            f"renoised={sets['renoised']}", "--features", "patchstats", "--bootstrap", "3",
            *SMALL]  # fmt: skip
    two, _ = _evaluate_both_ways(args, tmp_path / "unpaired")
    _same_tables("unpaired", tmp_path / "unpaired", two)
    assert "| blurred |" in two and "| renoised |" in two
    args = ["memorization", "--train", str(sets["originals"]), "--held-out",
            str(sets["held-out"]), "--generated", f"gen={sets['generated']}"]  # fmt: skip
    two, _ = _evaluate_both_ways(args, tmp_path / "memo")
    _same_tables("memorization", tmp_path / "memo", two)
    records = json.loads((tmp_path / "memo" / "two" / "memorization.json").read_text())["records"]
    near = {r["subject"]: r for r in records if r["set"] == "gen"}
    assert near["gen-0"]["nearest"] == "sub-00" and near["gen-0"]["copy"]
    assert not near["gen-1"]["copy"]


@pytest.mark.slow
def test_a_bad_volume_in_one_ranks_share_stops_every_rank(sets, tmp_path):
    """Subject 1 (rank 1's) is on another grid: every rank exits with the one-line error one
    process gives, and no tables are written."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for i, f in enumerate(sorted(p.name for p in sets["blurred"].iterdir())):
        if i == 1:
            other = np.random.default_rng(0).random((SHAPE[0] - 2, *SHAPE[1:]), np.float32)
            save_nifti(bad / f, other, AFFINE)
        else:
            (bad / f).symlink_to(sets["blurred"] / f)
    args = ["evaluate", "paired", "--originals", str(sets["originals"]), "--labels",
            str(sets["labels"]), "--candidate", f"bad={bad}", "--no-lpips", *SMALL]  # fmt: skip
    one = run_realdeal([*args, "--out", str(tmp_path / "one")])
    two = run_realdeal([*args, "--out", str(tmp_path / "two")], nproc=2)
    assert one.returncode == 2
    message = one.stderr.strip().splitlines()[-1]
    assert "sub-01.nii.gz" in message and "shape" in message
    assert two.returncode != 0
    assert two.stderr.count(message) == 2, two.stderr[-3000:]  # rank 0 and rank 1 alike
    assert not (tmp_path / "two" / "tables.md").exists()


def _torchvision_problem() -> str | None:
    from realdeal.runtime.environment import torchvision_problem

    return torchvision_problem()


@pytest.mark.slow
@pytest.mark.skipif(
    _torchvision_problem() is not None,
    reason=f"LPIPS and FID need a working torchvision: {_torchvision_problem()}",
)
def test_network_features_under_torchrun_equal_one_process(sets, tmp_path, weights_dir):
    """LPIPS (AlexNet, on 64² patches: smaller ones are too small for it) and FID (Inception)
    with random weights of the real layouts: each rank runs the networks on its own volumes'
    patches; the tables equal one process's."""
    net = ["--weights-dir", str(weights_dir), "--no-download", "--device", "cpu"]
    args = ["paired", "--originals", str(sets["originals-2"]), "--labels", str(sets["labels-2"]),
            "--candidate", f"blurred={sets['blurred-2']}", "--bootstrap", "20", "--patches", "4",
            "--patch-size", "64", "--workers", "1", *net]  # fmt: skip
    two, _ = _evaluate_both_ways(args, tmp_path / "lpips")
    _same_tables("paired", tmp_path / "lpips", two)
    assert "lpips" in (tmp_path / "lpips" / "two" / "per_subject.csv").read_text()
    args = ["unpaired", "--real", str(sets["originals-2"]), "--generated",
            f"blurred={sets['blurred-2']}", "--features", "inception", "--bootstrap", "0",
            "--patches", "11", "--patch-size", "16", "--workers", "1", *net]  # fmt: skip
    # (2 subjects × 11 patches: more than the largest k of PRDC, 20)
    two, _ = _evaluate_both_ways(args, tmp_path / "fid")
    _same_tables("unpaired", tmp_path / "fid", two)
    assert "FID" in two
