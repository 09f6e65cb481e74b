"""Memorisation: copies of training volumes (under new gain, offset and noise) are found and
named, new subjects are not, and bad input is a one-line error naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from realdeal.cli import main
from realdeal.errors import ConfigError, InputError
from realdeal.metrics.memorization import (
    HELD_OUT_SET,
    TRAINING_SET,
    block_mean,
    evaluate_memorization,
    factor_for,
)
from realdeal.metrics.subjects import find_set

from synthetic import save_nifti

SHAPE = (24, 28, 24)


def _texture(seed: int) -> np.ndarray:
    t = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(SHAPE), 2.0)
    return t / t.std()


def _head(seed: int) -> np.ndarray:
    """An ellipsoid 'brain': anatomy all subjects share plus their own, equally strong (each
    seed a new subject; two subjects correlate about 0.5 inside the brain)."""
    idx = np.indices(SHAPE, dtype=np.float32)
    c = (np.array(SHAPE, np.float32) - 1) / 2
    d = np.sqrt(sum(((idx[i] - c[i]) / (0.42 * SHAPE[i])) ** 2 for i in range(3)))
    inside = 600 + 100 * _texture(1000) + 100 * _texture(seed)
    return np.where(d < 1, inside, 0).astype(np.float32)


@pytest.fixture
def sets(tmp_path):
    """6 training heads, 6 held-out heads, and generated: 3 copies of training heads (new
    gain, offset and noise) and 2 new heads."""
    rng = np.random.default_rng(99)
    folders = {k: tmp_path / k for k in ("train", "held", "gen")}
    for f in folders.values():
        f.mkdir()
    for i in range(6):
        save_nifti(folders["train"] / f"sub-{i:02d}.nii.gz", _head(i))
    for i in range(6, 12):
        save_nifti(folders["held"] / f"sub-{i:02d}.nii.gz", _head(i))
    for k, src in enumerate((1, 4, 4)):
        x = _head(src)
        copy = np.where(x > 0, 0.7 * x + 40 + rng.normal(0, 15, SHAPE), 0).astype(np.float32)
        save_nifti(folders["gen"] / f"copy-{k}.nii.gz", copy)
    for k, seed in enumerate((20, 21)):
        save_nifti(folders["gen"] / f"new-{k}.nii.gz", _head(seed))
    return {k: find_set(k, f) for k, f in folders.items()}


def test_copies_are_found_and_named_new_subjects_are_not(sets, tmp_path):
    res = evaluate_memorization(sets["train"], [sets["gen"]], sets["held"], out_dir=tmp_path / "o")
    by = {(r["set"], r["subject"]): r for r in res.records}
    held = [r["similarity"] for r in res.records if r["set"] == HELD_OUT_SET]
    assert res.threshold == pytest.approx(1 - (1 - max(held)) / 2)
    for k, src in enumerate((1, 4, 4)):
        r = by[("gen", f"copy-{k}")]
        assert r["copy"] and r["nearest"] == f"sub-{src:02d}" and r["similarity"] > 0.9
    for k in range(2):
        r = by[("gen", f"new-{k}")]
        assert not r["copy"] and r["similarity"] < 0.9
    gen = next(s for s in res.summary if s["set"] == "gen")
    # sub-04 is nearest to its two copies and to new-0 (which is no copy of it)
    assert (gen["volumes"], gen["copies"], gen["top_nearest"], gen["top_count"]) == (
        5, 3, "sub-04", 3
    )  # fmt: skip
    assert by[("gen", "new-0")]["similarity"] > max(held)  # beats every held-out subject …
    assert not by[("gen", "new-0")]["copy"]  # … by chance, as new subjects do: no copy
    # the training subjects against the others: never themselves
    train_recs = [r for r in res.records if r["set"] == TRAINING_SET]
    assert len(train_recs) == 6 and all(r["subject"] != r["nearest"] for r in train_recs)
    assert all(r["similarity"] < 0.9 for r in train_recs)
    # written, and the JSON says the same
    saved = json.loads((tmp_path / "o" / "memorization.json").read_text())
    assert saved["threshold"] == res.threshold and saved["summary"] == res.summary
    assert "3 of 5" in (tmp_path / "o" / "tables.md").read_text()
    assert (tmp_path / "o" / "per_subject.csv").read_text().count("\n") == 1 + 6 + 6 + 5
    assert not list((tmp_path / "o").glob(".*tmp*"))


def test_without_held_out_subjects_there_is_no_copy_threshold(sets):
    res = evaluate_memorization(sets["train"], [sets["gen"]])
    assert res.threshold is None
    assert all(r["copy"] is None for r in res.records)
    assert next(s for s in res.summary if s["set"] == "gen")["copies"] is None
    assert "no copy threshold" in res.markdown


def test_block_mean_and_factor():
    x = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    y = block_mean(x, 2)
    assert y.shape == (2, 3, 2)
    assert y[0, 0, 0] == pytest.approx(x[:2, :2, :2].mean())
    assert block_mean(x, 1) is x
    assert factor_for((224, 288, 224), 300_000) == 4  # 56 × 72 × 56 = 225,792
    assert factor_for((24, 28, 24), 300_000) == 1
    assert np.prod([n // factor_for((97, 101, 89), 5_000) for n in (97, 101, 89)]) <= 5_000


def test_bad_input_names_the_file(sets, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    bad = save_nifti(odd / "x.nii.gz", np.random.default_rng(0).random((20, 28, 24), np.float32))
    with pytest.raises(InputError, match=r"x\.nii\.gz: shape \(20, 28, 24\) differs"):
        evaluate_memorization(sets["train"], [find_set("odd", odd)])
    assert bad.exists()
    one = find_set("one", sorted(sets["train"].paths.values())[:1])
    with pytest.raises(ConfigError, match="at least 2 training volumes"):
        evaluate_memorization(one, [sets["gen"]])


def test_command(sets, tmp_path, capsys):
    folder = lambda s: str(next(iter(sets[s].paths.values())).parent)  # noqa: E731
    out = tmp_path / "cli"
    rc = main(["evaluate", "memorization", "--train", folder("train"), "--held-out",
               folder("held"), "--generated", f"ldm={folder('gen')}", "--out", str(out)])  # fmt: skip
    assert rc == 0 and "3 of 5" in capsys.readouterr().out
    assert json.loads((out / "memorization.json").read_text())["summary"][-1]["set"] == "ldm"
    assert main(["evaluate", "memorization", "--generated", f"ldm={folder('gen')}",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "needs --train" in capsys.readouterr().err
