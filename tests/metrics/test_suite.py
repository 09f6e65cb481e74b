"""End-to-end suites on tiny NIfTI cohorts, and bad inputs that must give one-line errors."""

import argparse
import json

import numpy as np
import pytest

from realdeal.commands import evaluate as cmd
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.metrics.sharpness import SharpnessConfig
from realdeal.metrics.subjects import EmptySetError, MissingRegionError, SetMismatchError, find_set
from realdeal.metrics.suite import (
    NetworkOptions,
    PairedConfig,
    UnpairedConfig,
    evaluate_paired,
    evaluate_unpaired,
)

SHAPE = (48, 56, 48)
SMALL = PairedConfig(
    patch_size_2d=32,
    n_patches_2d=20,
    sharpness=SharpnessConfig(patch_size=16, n_patches=40),
    n_bootstrap=200,
)


def _means(result):
    return {(r["set"], r["metric"], r["axis"]): r["mean"] for r in result.summary}


@pytest.fixture(scope="module")
def paired_result(cohort, weights_dir):
    return evaluate_paired(
        find_set("originals", cohort["originals"]),
        [find_set(n, cohort[n]) for n in ("blurred", "stripped", "renoised")],
        find_set("labels", cohort["labels"]),
        SMALL,
        NetworkOptions(weights_dir=str(weights_dir), allow_download=False),
        workers=1,
    )


@pytest.mark.slow
def test_paired_ordering(paired_result):
    m = _means(paired_result)
    assert m[("original", "sharpness", "")] > m[("blurred", "sharpness", "")]
    for d in ("dim0", "dim1", "dim2"):
        assert m[("blurred", "hog_brain", d)] > m[("renoised", "hog_brain", d)]
    for r in ("white_matter", "lateral_ventricles"):
        assert m[("stripped", f"kl_{r}", "")] > m[("renoised", f"kl_{r}", "")]
    assert m[("renoised", "psnr", "")] > m[("blurred", "psnr", "")]
    assert {("blurred", "lpips", d) for d in ("dim0", "dim1", "dim2")} <= set(m)


def test_paired_records_and_cis(paired_result):
    assert {r["subject"] for r in paired_result.records} == {"sub-00", "sub-01", "sub-02"}
    for row in paired_result.summary:
        assert row["n"] == 3
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    md = paired_result.markdown
    assert "Table 1" in md and "Table 2" in md and "| blurred |" in md and "| original |" in md


@pytest.mark.slow
def test_paired_is_deterministic_and_worker_independent(cohort, paired_result):
    cfg = PairedConfig(**{**SMALL.__dict__, "lpips": False})
    args = (
        find_set("originals", cohort["originals"]),
        [find_set("blurred", cohort["blurred"])],
        find_set("labels", cohort["labels"]),
        cfg,
    )
    one = evaluate_paired(*args, workers=1)
    two = evaluate_paired(*args, workers=2)
    key = lambda r: (r["subject"], r["set"], r["metric"], r["axis"])  # noqa: E731
    assert sorted(map(key, one.records)) == sorted(map(key, two.records))
    a = {key(r): r["value"] for r in one.records}
    b = {key(r): r["value"] for r in two.records}
    c = {key(r): r["value"] for r in paired_result.records}
    assert all(a[k] == pytest.approx(b[k], rel=1e-6) for k in a)
    assert all(a[k] == pytest.approx(c[k], rel=1e-6) for k in a)  # same seed → same numbers


def test_unpaired_patchstats_orders_sets(cohort):
    cfg = UnpairedConfig(
        patch_size_2d=16, n_patches_2d=40, features="patchstats", ks=(3, 5), n_bootstrap=5
    )
    res = evaluate_unpaired(
        find_set("real", cohort["originals"]),
        [find_set("blurred", cohort["blurred"]), find_set("renoised", cohort["renoised"])],
        cfg,
        find_set("labels", cohort["labels"]),
        workers=1,
    )
    m = _means(res)
    assert not any(k[1].startswith("fid") for k in m)  # never called FID without Inception
    for d in ("dim0", "dim1", "dim2"):
        assert m[("blurred", "fd_patchstats", d)] > m[("renoised", "fd_patchstats", d)]
        assert m[("blurred", "fd_patchstats", d)] > m[("original", "fd_patchstats", d)]
    assert (
        m[("original", "coverage_k5_patchstats", "dim0")]
        >= m[("blurred", "coverage_k5_patchstats", "dim0")]
    )
    assert "patch-stats" in res.markdown and "FID" not in res.markdown
    # jackknife intervals (3 subjects, all left out in turn) contain their own estimate,
    # recall included, and stay in the metric's range
    rows = [r for r in res.summary if np.isfinite(r["ci_low"])]
    assert {r["set"] for r in rows} == {"blurred", "renoised", "original"}
    assert any(r["metric"].startswith("recall") for r in rows)
    for r in rows:
        assert r["ci_low"] <= r["mean"] <= r["ci_high"], r
        assert r["ci_low"] >= 0 and (
            r["ci_high"] <= 1 or r["metric"].split("_")[0] in ("fd", "density")
        )
    assert "jackknife" in res.markdown


def test_jackknife_interval_of_a_mean_is_the_t_interval():
    """Closed form: for the mean, the jackknife SE is s/√n, so the interval is the t interval."""
    from scipy import stats

    from realdeal.metrics.tables import jackknife_ci

    x = np.random.default_rng(0).normal(3.0, 2.0, 12)
    n = len(x)
    loo = [np.delete(x, i).mean() for i in range(n)]
    lo, hi = jackknife_ci(float(x.mean()), loo, n, 0.9)
    half = stats.t.ppf(0.95, n - 1) * x.std(ddof=1) / np.sqrt(n)
    assert np.allclose([lo, hi], [x.mean() - half, x.mean() + half])
    assert jackknife_ci(0.02, [0.021, 0.019, 0.03], 3, 0.95, (0.0, 1.0))[0] == 0.0  # clipped
    assert np.isnan(jackknife_ci(1.0, [1.0], 5, 0.95)[0])  # one value: no interval


@pytest.mark.slow
def test_unpaired_inception_runs_with_weight_file(cohort, weights_dir):
    cfg = UnpairedConfig(patch_size_2d=16, n_patches_2d=2, ks=(1,), n_bootstrap=0)
    two = ["sub-00.nii.gz"]  # one subject per set keeps the CPU Inception passes short
    res = evaluate_unpaired(
        find_set("real", [cohort["originals"] / f for f in two]),
        [find_set("blurred", [cohort["blurred"] / f for f in two])],
        cfg,
        network=NetworkOptions(weights_dir=str(weights_dir), allow_download=False),
        workers=1,
    )
    assert {("blurred", "fid", d) for d in ("dim0", "dim1", "dim2")} <= set(_means(res))


def _parse(argv):
    p = argparse.ArgumentParser()
    cmd.register(p.add_subparsers())
    return p.parse_args(["evaluate", *argv])


def test_command_writes_tables(cohort, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = _parse(
        [
            "paired",
            "--originals",
            str(cohort["originals"]),
            "--labels",
            str(cohort["labels"]),
            "--candidate",
            f"blurred={cohort['blurred']}",
            "--no-lpips",
            "--patches",
            "10",
            "--patch-size",
            "16",
            "--bootstrap",
            "50",
            "--workers",
            "1",
            "--seam-window",
            "16",
            "--out",
            str(out),
        ]
    )
    import dataclasses

    import realdeal.metrics.suite as S

    seen = {}

    def tiny(originals, candidates, labels, config, *a, **k):  # tiny volumes: small sharpness
        seen["config"] = config
        config = dataclasses.replace(config, sharpness=SharpnessConfig(patch_size=16, n_patches=20))
        return real(originals, candidates, labels, config, *a, **k)

    real = S.evaluate_paired
    monkeypatch.setattr(S, "evaluate_paired", tiny)
    assert args.func(args) == 0
    cfg = seen["config"]  # every flag reached the settings
    assert (cfg.seam_window, cfg.n_patches_2d, cfg.patch_size_2d) == (16, 10, 16)
    assert (cfg.n_bootstrap, cfg.lpips, cfg.noise.backend) == (50, False, "dipy")
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "| blurred |" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["mode"] == "paired" and data["records"]
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header == "set,metric,axis,mean,ci_low,ci_high,n"
    assert (out / "per_subject.csv").read_text().count("\n") == len(data["records"]) + 1


def _run_paired(originals, labels, candidates, tmp_path):
    args = _parse(
        [
            "paired",
            "--originals",
            str(originals),
            "--labels",
            str(labels),
            "--no-lpips",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "o"),
            *sum((["--candidate", f"{n}={p}"] for n, p in candidates.items()), []),
        ]
    )
    return args.func(args)


def test_bad_inputs_give_one_line_errors(cohort, tmp_path, nifti_writer):
    write_nifti = nifti_writer
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    (fewer / "sub-00.nii.gz").symlink_to(cohort["blurred"] / "sub-00.nii.gz")
    with pytest.raises(
        SetMismatchError, match="fewer set has 1 subjects, originals has 3; missing sub-01"
    ):
        _run_paired(cohort["originals"], cohort["labels"], {"fewer": fewer}, tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptySetError, match="empty"):
        _run_paired(cohort["originals"], cohort["labels"], {"x": empty}, tmp_path)

    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    write_nifti(img / "s.nii.gz", np.random.default_rng(0).random(SHAPE).astype(np.float32))
    write_nifti(lab / "s.nii.gz", np.ones((SHAPE[0], SHAPE[1], SHAPE[2] - 1), np.int16))
    with pytest.raises(InputError, match="shape"):
        _run_paired(img, lab, {"c": img}, tmp_path)
    write_nifti(lab / "s.nii.gz", np.ones(SHAPE, np.int16), affine=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(InputError, match="affine"):
        _run_paired(img, lab, {"c": img}, tmp_path)
    write_nifti(lab / "s.nii.gz", np.full(SHAPE, 2, np.int16))  # white matter only
    with pytest.raises(MissingRegionError, match="lateral_ventricles") as e:
        _run_paired(img, lab, {"c": img}, tmp_path)
    assert "\n" not in str(e.value) and "s.nii.gz" in str(e.value)


def test_cli_turns_errors_into_exit_2(cohort, tmp_path, capsys):
    from realdeal import cli

    if "realdeal.commands.evaluate" not in cli.COMMANDS:
        pytest.skip("evaluate not wired into realdeal.cli yet")
    rc = cli.main(
        [
            "evaluate",
            "paired",
            "--originals",
            str(cohort["originals"]),
            "--labels",
            str(cohort["labels"]),
            "--candidate",
            f"x={tmp_path}",
            "--no-lpips",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "empty" in err[0]
    assert issubclass(EmptySetError, RealDealError)


def test_too_few_patches_for_prdc_and_too_small_for_lpips_are_one_line_errors(cohort):
    """k-NN radii need more than k patches a set; AlexNet needs patches of 31 voxels or more."""
    cfg = UnpairedConfig(patch_size_2d=16, n_patches_2d=2, features="patchstats", ks=(5,))
    one = ["sub-00.nii.gz"]  # one subject, 2 patches an axis: fewer than k = 5
    with pytest.raises(ConfigError, match="k = 5 need more than 5 patches") as e:
        evaluate_unpaired(
            find_set("real", [cohort["originals"] / f for f in one]),
            [find_set("blurred", [cohort["blurred"] / f for f in one])],
            cfg,
            workers=1,
        )
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at least 31 voxels, got 16"):
        evaluate_paired(
            find_set("originals", cohort["originals"]),
            [find_set("blurred", cohort["blurred"])],
            find_set("labels", cohort["labels"]),
            PairedConfig(patch_size_2d=16),
            workers=1,
        )
