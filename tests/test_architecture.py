"""The package's architecture: the import-linter contracts in pyproject.toml hold (layers
with independent siblings; ``diffusion`` knows no network, data layout or windows), and the
check itself fails on an import against them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realdeal.utils.structure import graph

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def lint(checkout: Path, src: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=checkout,
        env={"PYTHONPATH": str(src), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold():
    proc = lint(ROOT, ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_every_subpackage_has_a_layer():
    text = (ROOT / "pyproject.toml").read_text()
    layered = set(text[text.index('id = "layers"') :].split("]")[0].replace('"', " ").split())
    units = set(graph()) | {u for dsts in graph().values() for u in dsts}
    missing = {u for u in units if f"realdeal.{u}" not in layered}
    assert not missing, f"subpackages without a layer in pyproject.toml: {missing}"


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("data/_probe.py", "from realdeal.training import engine"),  # upward
        ("metrics/_probe.py", "from realdeal.pipelines import refiner"),  # sibling
        ("diffusion/_probe.py", "def f():\n    from realdeal.inference import plan\n"),  # hidden
    ],
)
def test_the_check_fails_on_a_broken_contract(tmp_path, module, line):
    """A copy of the package with one import against the contracts is caught."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "realdeal", src / "realdeal", ignore=_not_python)
    (src / "realdeal" / module).write_text(line + "\n")
    proc = lint(tmp_path, src)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "BROKEN" in proc.stdout and "_probe" in proc.stdout


def _not_python(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".py") and not (Path(folder) / n).is_dir()]
