"""The command line: help and error format (the demo: tests/test_demo.py)."""

from __future__ import annotations

import subprocess
import sys

from realdeal.cli import main


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "realdeal", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("cohort", "prepare", "demo"):
        assert cmd in out


def test_cohort_command_error_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["cohort", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("realdeal cohort: error:") and "\n" not in err


def test_invalid_step_counts_exit_2(capsys):
    import pytest

    for argv in (
        ["refine", "in.nii.gz", "-o", "out", "--checkpoint", "r.pt", "--steps", "0"],
        ["sample", "--ldm", "l.pt", "-o", "out", "--steps", "-2"],
        ["demo", "--refine-steps", "0"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "must be at least 1" in capsys.readouterr().err


def test_help_texts_follow_the_default_sampling_table():
    from realdeal.cli import build_parser
    from realdeal.diffusion.registry import DEFAULT_SAMPLING, SAMPLERS

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    refine_help = " ".join(sub["refine"].format_help().split())
    sample_help = " ".join(sub["sample"].format_help().split())
    for use, helps in (("residual", [refine_help]), ("image", [refine_help]),
                       ("ldm", [sample_help])):  # fmt: skip
        sampler, steps, eta, spacing, variance = DEFAULT_SAMPLING[use]
        steps_text = f"{steps} steps" if spacing == "linear" else f"{steps} {spacing} steps"
        steps_text += "" if variance == "fixed" else f", {variance} variance"
        expected = f"{sampler}, eta {eta:g}, {steps_text}" if eta else f"{sampler}, {steps_text}"
        assert all(expected in h for h in helps), (use, expected)
    assert "ddim 50" not in refine_help.split("--steps")[1].split("with --sampler")[0]
    for help_text in (refine_help, sample_help):
        assert f"{{{','.join(SAMPLERS)}}}" in help_text  # every registered sampler is a choice
        for name, spec in SAMPLERS.items():
            if spec.steps is not None:
                assert f"{name} {spec.steps}" in help_text


def test_traversal_flag_and_its_deprecated_alias():
    from realdeal.cli import build_parser

    parser = build_parser()
    base = ["refine", "in.nii.gz", "-o", "out", "--checkpoint", "r.pt"]
    assert parser.parse_args(base).traversal is None
    assert parser.parse_args([*base, "--traversal", "official"]).traversal == "official"
    assert parser.parse_args([*base, "--schedule", "official"]).traversal == "official"
    sub = parser._subparsers._group_actions[0].choices
    refine_help = sub["refine"].format_help()
    assert "--traversal" in refine_help and "--schedule {" not in refine_help
    train_help = " ".join(sub["train"].format_help().split())
    assert "refiner" in train_help and "refiner" in " ".join(parser.format_help().split())
