"""``realdeal doctor`` and the torchvision check where LPIPS and FID are used.

torchvision is replaced in each test (a module that works, or an import that fails the way a
torchvision built for another torch fails), so these tests give the same answers whether the
installed torchvision works or not.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import types

import pytest
import torch

from realdeal.cli import main
from realdeal.errors import InstallationError
from realdeal.runtime import environment as E

BROKEN = "operator torchvision::nms does not exist"


class _BrokenTorchvision(importlib.abc.MetaPathFinder):
    """Fails ``import torchvision`` as a torchvision built for another torch does."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError(BROKEN)
        return None


@pytest.fixture
def broken_torchvision(monkeypatch):
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])


@pytest.fixture
def working_torchvision(monkeypatch):
    tv = types.ModuleType("torchvision")
    tv.ops = types.SimpleNamespace(nms=lambda boxes, scores, iou: torch.zeros(1, dtype=torch.long))
    monkeypatch.setitem(sys.modules, "torchvision", tv)


@pytest.fixture
def colin(tmp_path, monkeypatch):
    """Point the Colin27 check at a folder of ours (empty until the test fills it)."""
    from realdeal.data import cohort

    folder = tmp_path / "mricron"
    folder.mkdir()
    monkeypatch.setattr(cohort, "MRICRON_DIR", folder)
    return folder


def _lines(out: str) -> dict[str, str]:
    """``{name: line}`` of the doctor's check lines (``  STATUS   NAME   DETAIL``, in columns),
    by the whole name and by its first word (``torchvision`` for ``torchvision 0.20.1``)."""
    found = {}
    for line in out.splitlines():
        if line.startswith("  ") and len(line) > 11:
            name = line[11:35].strip()
            found.setdefault(name, line)
            found.setdefault(name.split()[0], line)
    return found


def test_a_broken_torchvision_and_missing_colin27(broken_torchvision, colin, capsys, tmp_path):
    code = main(["doctor", "-o", str(tmp_path / "doctor.json")])
    out = capsys.readouterr().out
    lines = _lines(out)
    assert code == 1
    tv = lines["torchvision"]
    assert tv.split()[0] == "BROKEN" and BROKEN in tv
    assert f"torchvision {E.package_version('torchvision')}" in tv
    assert f"torch {E.package_version('torch')}" in tv and "pip install" in tv
    assert "LPIPS and FID" in tv
    assert lines["Colin27 + AAL"].split()[0] == "absent"
    assert "mricron-data" in lines["Colin27 + AAL"] and str(colin) in lines["Colin27 + AAL"]
    assert lines["torch"].split()[0] == "OK"
    for name in ("monai", "numpy", "nibabel", "dipy", "scikit-image", "nilearn", "lpips",
                 "pytorch-fid", "safetensors", "CUDA", "CPU bf16"):  # fmt: skip
        assert name in lines, name
    assert out.rstrip().endswith("1 required item(s) broken or missing: " + tv.split()[1] + " "
                                 + tv.split()[2])  # fmt: skip
    record = json.loads((tmp_path / "doctor.json").read_text())
    assert record["ok"] is False
    assert [c["name"] for c in record["checks"] if c["required"] and c["status"] != "OK"] == [
        " ".join(tv.split()[1:3])
    ]


def test_all_required_present_is_exit_0_even_without_optional_data(working_torchvision, colin,
                                                                   capsys):  # fmt: skip
    assert main(["doctor", "--weights-dir", str(colin)]) == 0  # no weight files there either
    lines = _lines(capsys.readouterr().out)
    assert lines["torchvision"].split()[0] == "OK" and "operators load" in lines["torchvision"]
    assert lines["Colin27 + AAL"].split()[0] == "absent"
    assert lines["LPIPS AlexNet weights"].split()[0] == "absent"
    assert "--no-lpips" in lines["LPIPS AlexNet weights"]
    for name in ("ch2bet.nii.gz", "aal.nii.gz"):
        (colin / name).write_bytes(b"")
    assert main(["doctor"]) == 0
    assert _lines(capsys.readouterr().out)["Colin27 + AAL"].split()[0] == "OK"


def test_the_point_of_use_check_is_one_line(broken_torchvision, capsys, tmp_path):
    from realdeal.metrics.lpips import load_lpips

    with pytest.raises(InstallationError) as info:
        load_lpips(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("LPIPS (--no-lpips skips it) needs torchvision")
    assert f"torchvision {E.package_version('torchvision')}" in msg and "pip install" in msg
    assert "0.N+15 goes with torch 2.N" in msg
    # the command: one line on stderr, exit status 2, before any file is read
    argv = ["evaluate", "paired", "--originals", str(tmp_path / "o"), "--candidate",
            f"a={tmp_path / 'a'}", "--out", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("realdeal evaluate: error: LPIPS")
    assert BROKEN in err and "pip install" in err
    unpaired = ["evaluate", "unpaired", "--features", "inception", "--real", "r",
                "--generated", "g=x", "--out", str(tmp_path / "eval")]  # fmt: skip
    assert main(unpaired) == 2
    assert "FID" in capsys.readouterr().err
    # without LPIPS the broken torchvision is not in the way
    main([*argv, "--no-lpips"])
    assert "torchvision" not in capsys.readouterr().err


def test_the_fix_names_a_matching_pair():
    assert E.matching_torchvision("2.5.1") == "0.20.1"
    assert E.matching_torchvision("2.13.0a0") == "0.28.0"
    assert E.matching_torchvision("1.13.1") is None
    fix = E.pair_fix("2.4.0+cu121")
    assert fix == ("pip install --force-reinstall torch==2.4.0 torchvision==0.19.0 "
                   "--index-url https://download.pytorch.org/whl/cu121")  # fmt: skip
    assert E.pair_fix("2.6.0") == "pip install --force-reinstall torch==2.6.0 torchvision==0.21.0"


def test_a_working_torchvision_passes(working_torchvision):
    assert E.torchvision_problem() is None
    E.check_torchvision("LPIPS")
