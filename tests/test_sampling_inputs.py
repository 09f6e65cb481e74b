"""NaN and other out-of-range sampler inputs are refused where settings are made, JSON side
files never hold NaN, and a volume that comes out non-finite is not written.

From the command line: exit status 2, one line on stderr naming the flag, nothing written.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

from realdeal.cli import main
from realdeal.errors import ConfigError, RealDealError
from tiny_ldm import tiny_ldm_checkpoint
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

BAD_ETAS = [math.nan, math.inf, -math.inf, -0.1, 1.5]
BAD_STRENGTHS = [math.nan, math.inf, 0.0, -0.5, 1.5]


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("eta", BAD_ETAS)
def test_bad_eta_is_refused_wherever_sampling_settings_are_made(eta):
    from realdeal.diffusion.registry import DEFAULT_SAMPLING, Sampling, SamplingConfig, make_sampler
    from realdeal.diffusion.schedule import NoiseSchedule
    from realdeal.pipelines.refiner import RefineSettings

    made = [
        lambda: RefineSettings(eta=eta),
        lambda: RefineSettings.from_dict({"eta": eta}),
        lambda: Sampling("ddim", 10, eta),
        lambda: SamplingConfig(eta=eta).resolve(DEFAULT_SAMPLING["ldm"]),
        lambda: SamplingConfig("ddim", eta=eta).resolve(DEFAULT_SAMPLING["ldm"]),
        lambda: make_sampler("ddim", NoiseSchedule(), 10, eta=eta),
    ]
    for make in made:
        with pytest.raises(ConfigError, match=r"--eta.*\[0, 1\]") as info:
            make()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("strength", BAD_STRENGTHS)
def test_bad_strength_is_refused(strength):
    from realdeal.diffusion.registry import truncate
    from realdeal.diffusion.samplers import DDIMSampler
    from realdeal.diffusion.schedule import NoiseSchedule
    from realdeal.pipelines.refiner import RefineSettings

    with pytest.raises(ConfigError, match=r"--strength.*\(0, 1\]"):
        RefineSettings(strength=strength)
    with pytest.raises(ConfigError, match="strength"):
        truncate(DDIMSampler(NoiseSchedule(), 10), strength, 1000)


def test_good_settings_pass_and_bounds_are_inclusive():
    from realdeal.diffusion.registry import Sampling
    from realdeal.pipelines.refiner import RefineSettings

    assert RefineSettings(eta=0, strength=1).eta == 0.0
    assert RefineSettings(eta=np.float32(1.0), strength=0.25).eta == 1.0
    assert Sampling("ddim", 10, 1).eta == 1.0
    with pytest.raises(ConfigError, match="--eta"):
        RefineSettings(eta="0.5")  # type: ignore[arg-type]
    for field, flag in (("max_batch", "--max-batch"), ("batch_volumes", "--batch-volumes"),
                        ("steps", "--steps")):  # fmt: skip
        with pytest.raises(ConfigError, match=flag):
            RefineSettings(**{field: 0})
    with pytest.raises(ConfigError, match="--overlap"):
        RefineSettings(overlap=-1)


# -- the JSON writer ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_json_writer_refuses_non_finite_numbers_and_writes_nothing(tmp_path, bad):
    from realdeal.utils.fs import write_json_atomic

    path = tmp_path / "side.json"
    with pytest.raises(ValueError, match=r"side\.json.*volumes\[1\]\.seam_score = ") as info:
        write_json_atomic(path, {"volumes": [{"seam_score": 1.0}, {"seam_score": bad}]})
    assert "not valid JSON" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
    path.write_text('{"old": 1}\n')
    with pytest.raises(ValueError):
        write_json_atomic(path, [bad])
    assert json.loads(path.read_text()) == {"old": 1}  # an existing file is left as it was
    write_json_atomic(path, {"undefined": None, "x": 1.5})
    assert _strict_json(path.read_text()) == {"undefined": None, "x": 1.5}


def _strict_json(text: str):
    """``json.loads`` that fails on NaN/Infinity (Python's accepts them; JSON has none)."""

    def refuse(constant: str):
        raise AssertionError(f"not valid JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# -- the command line ----------------------------------------------------------------------


def _run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()  # only what the command writes: not the test's own set-up logging
    try:
        code = main(["-q", *argv])
    except SystemExit as e:  # a bad option value is a usage error: the parser exits
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def refiner_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    return tiny_refiner_checkpoint(root / "refiner.pt"), coarse_volumes(root / "in", 2)


@pytest.mark.parametrize(
    "flag,value",
    [("--eta", "nan"), ("--eta", "inf"), ("--eta", "-1"), ("--eta", "2"),
     ("--strength", "nan"), ("--strength", "0"), ("--strength", "-inf")],
)  # fmt: skip
def test_refine_command_refuses_bad_floats_and_writes_nothing(
    refiner_files, tmp_path, capsys, flag, value
):
    ckpt, files = refiner_files
    out = tmp_path / "out"
    argv = ["refine", str(files[0].parent), "-o", str(out), "--checkpoint", str(ckpt),
            "--sampler", "ddim", "--steps", "2", f"{flag}={value}", "--device", "cpu"]  # fmt: skip
    code, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realdeal refine: error: ")
    assert flag in lines[0] and "finite" in lines[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ldm"))


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5", "1.01"])
def test_sample_command_refuses_bad_eta_and_writes_nothing(ldm_checkpoint, tmp_path, capsys, value):
    out = tmp_path / "out"
    argv = ["sample", "--ldm", str(ldm_checkpoint), "-o", str(out), "--sampler", "ddim",
            "--steps", "2", f"--eta={value}", "--device", "cpu"]  # fmt: skip
    code, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realdeal sample: error: ")
    assert "--eta" in lines[0]
    assert not out.exists()


# -- volumes that come out non-finite ------------------------------------------------------


def _poison(path) -> None:
    """Set one weight of a checkpoint's network to NaN (its output is then NaN everywhere)."""
    state = torch.load(path, weights_only=True)
    for k in ("model", "ema"):
        tensors = state[k]
        name = next(n for n, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[name] = tensors[name].clone().fill_(math.nan)
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())


def test_ldm_sample_that_comes_out_nan_is_not_written(tmp_path, capsys):
    ckpt = tiny_ldm_checkpoint(tmp_path)
    _poison(ckpt)
    out = tmp_path / "out"
    argv = ["sample", "--ldm", str(ckpt), "-o", str(out), "-n", "2", "--sampler", "ddpm",
            "--steps", "2", "--device", "cpu"]  # fmt: skip
    code, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "sample 0 (seed 0)" in lines[0] and "non-finite" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []  # no volume, no sample_config.json

    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    with pytest.raises(RealDealError, match="non-finite"):
        LatentDiffusionPipeline.from_checkpoint(ckpt)(1, steps=2, show_progress=False)


@pytest.mark.slow
def test_refined_volume_that_comes_out_nan_is_not_written(tmp_path, capsys):
    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    _poison(ckpt)
    files = coarse_volumes(tmp_path / "in", 1)
    out = tmp_path / "out"
    argv = ["refine", str(files[0]), "-o", str(out), "--checkpoint", str(ckpt),
            "--steps", "2", "--device", "cpu"]  # fmt: skip
    code, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and files[0].name in lines[0] and "non-finite" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []  # no volume, no refine.json


def test_one_window_volume_has_no_seams_and_refine_json_says_null(tmp_path, capsys):
    """A volume no bigger than one window has no seams: its seam scores are undefined and are
    written as null (refine.json stays valid JSON) and printed as n/a."""
    from synthetic import save_nifti

    ckpt = tiny_refiner_checkpoint(tmp_path / "refiner.pt")  # 8³ windows
    idx = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1)
    x = np.where(np.linalg.norm(idx - 3.5, axis=-1) < 3.5, 0.2, -1.0).astype(np.float32)
    src = save_nifti(tmp_path / "small.nii.gz", x)
    out = tmp_path / "out"
    code = main(["-q", "refine", str(src), "-o", str(out), "--checkpoint", str(ckpt),
                 "--steps", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert "seam score n/a (input n/a)" in capsys.readouterr().out
    report = _strict_json((out / "refine.json").read_text())
    (vol,) = report["volumes"]
    assert vol["seam_score_input"] is None and vol["seam_score_output"] is None
