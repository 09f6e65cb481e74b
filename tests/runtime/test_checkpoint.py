"""Checkpoints: atomic, safe to load, and clear about what is wrong with a bad one."""

from __future__ import annotations

import pytest
import torch

from realdeal.errors import InputError
from realdeal.runtime.checkpoint import checkpoint_class, load_checkpoint, save_checkpoint


def _save(path, kind="autoencoder"):
    payload = checkpoint_class(kind)(step=3, config={}, model_config={}, model={"w": torch.ones(2)})
    return save_checkpoint(path, payload)


def test_round_trip_and_no_temp_files_left(tmp_path):
    p = _save(tmp_path / "c.pt")
    ck = load_checkpoint(p, kind="autoencoder")
    assert ck.step == 3 and torch.equal(ck.model["w"], torch.ones(2))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


def test_same_payload_same_bytes(tmp_path):
    """The file's bytes depend on the payload only (not on the temporary name it was written
    under), so a sha256 in a manifest identifies the weights of an export made again."""
    a, b = _save(tmp_path / "a.pt"), _save(tmp_path / "b" / "other-name.pt")
    assert a.read_bytes() == b.read_bytes()


def test_wrong_kind_is_refused(tmp_path):
    p = _save(tmp_path / "c.pt", kind="ldm")
    with pytest.raises(InputError, match="kind 'ldm', but kind 'autoencoder' is needed"):
        load_checkpoint(p, kind="autoencoder")


def test_truncated_file_is_one_clear_error(tmp_path):
    p = _save(tmp_path / "c.pt")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_checkpoint(p)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a realdeal checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


class Evil:
    """Any class: weights_only loading must refuse to build it."""


def test_pickled_objects_are_not_loaded(tmp_path):
    torch.save({"format": "realdeal-checkpoint/1", "kind": "ldm", "x": Evil()}, tmp_path / "e.pt")
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "e.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    p = _save(tmp_path / "c.pt")
    bad = load_checkpoint(p)
    bad.model = {"w": lambda: 0}  # not picklable: torch.save fails half-way
    with pytest.raises(Exception, match="lambda|pickle"):
        save_checkpoint(p, bad)
    assert load_checkpoint(p).step == 3
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(
    "content, what",
    [
        (b"step: 3\nlr: 1e-3\n" * 20, "a text file"),
        (b"", "an empty file"),
        (b"\x00\x01\x02binary", "another format"),
        (b"\x80\x02not really a pickle", "truncated or corrupt"),
    ],
)
def test_non_checkpoint_files_are_one_clear_error(tmp_path, content, what):
    p = tmp_path / "c.pt"
    p.write_bytes(content)
    with pytest.raises(InputError, match=what) as info:
        load_checkpoint(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["refine", "{d}/in.nii.gz", "-o", "{d}/out", "--checkpoint", "{ck}"],
        ["sample", "--ldm", "{ck}", "-o", "{d}/out"],
        ["import-official", "{ck}", "-o", "{d}/x.pt"],
    ],
)
def test_text_checkpoint_on_the_command_line_exits_2_in_one_line(tmp_path, capsys, argv):
    import nibabel as nib
    import numpy as np

    from realdeal.cli import main

    ck = tmp_path / "notes.txt"
    ck.write_text("".join(f"line {i}\n" for i in range(32)))
    # A readable input, so that refine's input checks (made before loading) pass.
    nib.save(
        nib.Nifti1Image(np.full((8, 8, 8), -1.0, np.float32), np.eye(4)), tmp_path / "in.nii.gz"
    )
    argv = [a.format(d=tmp_path, ck=ck) for a in argv]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(ck) in err and "not a PyTorch checkpoint" in err
