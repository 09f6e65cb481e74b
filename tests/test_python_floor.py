"""The oldest Python that pyproject's ``requires-python`` promises can run the source.

vermin (a test dependency) finds the minimum version each construct and standard-library
name needs (``datetime.UTC`` needs 3.11, for example); the check fails when the source needs
a newer Python than ``requires-python`` allows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _floor() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+\.\d+)"', text, re.M)
    assert m, 'pyproject.toml has no requires-python = ">=X.Y"'
    return m.group(1)


def _vermin(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is a test dependency (pip install -e '.[test]')")
    run = "import sys; from vermin import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    cmd = [sys.executable, "-c", run, "--no-tips", "--eval-annotations", "--violations"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_source_runs_on_the_promised_python():
    res = _vermin(f"--target={_floor()}-", str(ROOT / "src" / "realdeal"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_check_catches_a_newer_construct(tmp_path):
    (tmp_path / "m.py").write_text("from datetime import UTC\n")
    res = _vermin("--target=3.10-", str(tmp_path))
    assert res.returncode != 0 and "3.11" in res.stdout
