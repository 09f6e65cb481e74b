"""``demo:autoencoder|ldm|refiner`` name the shipped demo models from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from realdeal.cli import main
from realdeal.errors import InputError
from realdeal.runtime.checkpoint import (
    DEMO_MODELS,
    load_checkpoint,
    resolve_checkpoint,
    shipped_checkpoint_path,
)

from synthetic import phantom, save_nifti

PACKAGED = Path(__file__).resolve().parents[1] / "src" / "realdeal" / "demo_checkpoints"
SHIPPED = all(shipped_checkpoint_path(k).is_file() for k in DEMO_MODELS)


def test_names_map_to_the_packaged_files_and_paths_stay_paths(tmp_path):
    for kind in DEMO_MODELS:
        assert resolve_checkpoint(f"demo:{kind}") == shipped_checkpoint_path(kind)
        assert shipped_checkpoint_path(kind).parent.name == "demo_checkpoints"
    assert resolve_checkpoint("runs/ldm/checkpoint.pt") == Path("runs/ldm/checkpoint.pt")
    with pytest.raises(InputError, match="no shipped model of that name.*demo:refiner"):
        resolve_checkpoint("demo:unet")


@pytest.mark.skipif(not SHIPPED, reason="this installation has no shipped demo models")
def test_the_loader_and_a_command_take_the_names_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository: no relative path to the package works
    ckpt = load_checkpoint("demo:refiner")
    assert ckpt.kind == "refiner"
    if PACKAGED.is_dir():  # a checkout: the names are the files in src/
        assert resolve_checkpoint("demo:refiner").resolve() == (PACKAGED / "refiner.pt").resolve()
    img, _ = phantom(seed=0)
    save_nifti(tmp_path / "coarse.nii.gz", img)
    argv = ["refine", "coarse.nii.gz", "-o", "out", "--checkpoint", "demo:refiner",
            "--plan-only", "--resample"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "windows" in capsys.readouterr().out
    # a misspelt name is a usage error naming the option, before anything loads
    with pytest.raises(SystemExit) as info:
        main(["refine", "coarse.nii.gz", "-o", "out", "--checkpoint", "demo:refinr"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--checkpoint" in err and "demo:refinr" in err


@pytest.mark.skipif(not SHIPPED, reason="this installation has no shipped demo models")
def test_the_shipped_student_is_distilled_from_the_shipped_refiner():
    """``demo:refiner-student`` is a few-step student of ``demo:refiner`` (the file's sha256),
    as the manifest says, and samples with its own sampler."""
    import hashlib
    import json

    from realdeal.pipelines.refiner import RefinerPipeline

    refiner = resolve_checkpoint("demo:refiner")
    student = load_checkpoint("demo:refiner-student", kind="refiner")
    assert student.distilled is not None and student.distilled.steps <= 4
    assert student.distilled.teacher_sha256 == hashlib.sha256(refiner.read_bytes()).hexdigest()
    manifest = json.loads((refiner.parent / "manifest.json").read_text())
    assert manifest["models"]["refiner-student"]["refiner_sha256"] == manifest["sha256"]["refiner"]
    sampling = RefinerPipeline.from_checkpoint("demo:refiner-student").sampling()
    assert (sampling.sampler, sampling.steps) == ("distilled", student.distilled.steps)
