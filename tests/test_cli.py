"""The command line: help, the demo as README runs it (quick), error format."""

from __future__ import annotations

import subprocess
import sys

from realdeal.cli import main
from realdeal.data.dataset import PreparedDataset


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "realdeal", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("cohort", "prepare", "demo"):
        assert cmd in out


def test_demo_quick(tmp_path):
    assert main(["-q", "demo", "--quick", "-o", str(tmp_path / "demo")]) == 0
    out = tmp_path / "demo"
    assert (out / "cohort" / "cohort.png").stat().st_size > 10_000
    assert (out / "figures" / "test_subjects.png").exists()
    ds = PreparedDataset(out / "prepared")
    assert len(ds.ids("test")) == 1 and ds.load_label(ds.ids()[0]) is not None


def test_cohort_command_error_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["cohort", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("realdeal cohort: error:") and "\n" not in err
