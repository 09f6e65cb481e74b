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
