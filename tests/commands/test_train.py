"""``realdeal train autoencoder|ldm``, ``reconstruct``, ``encode``, ``sample`` on a tiny dataset."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from realdeal import cli
from realdeal.data.dataset import PreparedDataset
from realdeal.errors import InputError
from realdeal.pipelines.autoencoder import load_latent, require_reconstructions

MINE = [
    "realdeal.commands.train",
    "realdeal.commands.reconstruct",
    "realdeal.commands.encode",
    "realdeal.commands.sample",
]
ENGINE = [
    "--steps",
    "4",
    "--batch-size",
    "2",
    "--log-every",
    "1",
    "--checkpoint-every",
    "2",
    "--precision",
    "fp32",
    "--device",
    "cpu",
]
AE = [
    "--preset",
    "cpu-small",
    "--channels",
    "4",
    "8",
    "8",
    "--bottleneck",
    "4",
    "--crop",
    "16",
    "16",
    "16",
]
LDM = [
    "--preset",
    "cpu-small",
    "--channels",
    "8",
    "16",
    "--attention",
    "0",
    "1",
    "--head-channels",
    "0",
    "16",
    "--norm-groups",
    "8",
    "--num-res-blocks",
    "1",
]


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [m for m in MINE if m not in cli.COMMANDS])
    return cli.main


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from synthetic import prepared_phantoms

    return prepared_phantoms(tmp_path_factory.mktemp("ds"), 5, 0.2)


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.slow
def test_autoencoder_then_ldm_chain(main, prepared, tmp_path, capsys):
    ds = PreparedDataset(prepared)
    ae_dir, ldm_dir = tmp_path / "ae", tmp_path / "ldm"
    assert (
        main(
            ["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(ae_dir), *AE, *ENGINE]
        )
        == 0
    )
    cfg = json.loads((ae_dir / "config.json").read_text())["config"]
    assert (
        cfg["model"]["channels"] == [4, 8, 8]
        and cfg["preset"] == "cpu-small"
        and cfg["train"]["steps"] == 4
    )
    assert len((ae_dir / "metrics.jsonl").read_text().splitlines()) == 4

    # resume from the run's own config with more steps
    assert (
        main(
            [
                "-q",
                "train",
                "autoencoder",
                "--data",
                str(prepared),
                "-o",
                str(ae_dir),
                "--resume",
                "--steps",
                "6",
            ]
        )
        == 0
    )
    assert torch.load(ae_dir / "checkpoint.pt", weights_only=True)["step"] == 6
    # resuming with another architecture is refused in one line
    assert (
        main(
            [
                "-q",
                "train",
                "autoencoder",
                "--data",
                str(prepared),
                "-o",
                str(ae_dir),
                "--resume",
                "--steps",
                "8",
                "--channels",
                "4",
                "4",
                "4",
            ]
        )
        == 2
    )
    err = _err(capsys)  # refused before anything is written, naming what may not change
    assert "--resume cannot change" in err and "model.channels [4, 8, 8] → [4, 4, 4]" in err

    with pytest.raises(InputError, match="no autoencoder reconstructions"):
        require_reconstructions(ds, ds.ids())
    assert (
        main(
            [
                "-q",
                "reconstruct",
                "--autoencoder",
                str(ae_dir / "checkpoint.pt"),
                "--data",
                str(prepared),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    require_reconstructions(ds, ds.ids())
    sid = ds.ids()[0]
    rec, img = ds.load_derived("reconstructions", sid), ds.load_image(sid)
    assert rec.shape == img.shape and np.allclose(rec.affine, img.affine)
    assert rec.data.min() >= -1 and rec.data.max() <= 1 and not np.allclose(rec.data, img.data)

    enc = tmp_path / "latents"
    assert (
        main(
            [
                "-q",
                "encode",
                "--autoencoder",
                str(ae_dir / "checkpoint.pt"),
                "--data",
                str(prepared),
                "-o",
                str(enc),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    z, meta = load_latent(enc / f"{sid}.safetensors")
    assert z.shape == (4, 6, 8, 6) and meta["subject"] == sid
    scaling = json.loads((enc / "latent_scaling.json").read_text())
    assert all(lo < hi for lo, hi in zip(scaling["lo"], scaling["hi"], strict=True))

    assert (
        main(
            [
                "-q",
                "train",
                "ldm",
                "--data",
                str(prepared),
                "-o",
                str(ldm_dir),
                "--autoencoder",
                str(ae_dir / "checkpoint.pt"),
                *LDM,
                *ENGINE,
            ]
        )
        == 0
    )
    ck = torch.load(ldm_dir / "checkpoint.pt", weights_only=True)
    assert ck["kind"] == "ldm" and ck["extra"]["latent_shape"] == [4, 6, 8, 6]
    assert len(ck["extra"]["latent_scaling"]["lo"]) == 4

    out = tmp_path / "samples"
    assert (
        main(
            [
                "-q",
                "sample",
                "--ldm",
                str(ldm_dir / "checkpoint.pt"),
                "-o",
                str(out),
                "--n",
                "2",
                "--steps",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    files = sorted(out.glob("sample_*.nii.gz"))
    assert len(files) == 2 and (out / "sample_config.json").exists()
    nii = nib.load(files[0])
    assert nii.shape == ds.shape and np.allclose(nii.affine, nib.load(ds.image_path(sid)).affine)
    a, b = (np.asarray(nib.load(f).dataobj) for f in files)
    assert not np.array_equal(a, b) and a.min() >= -1.001 and a.max() <= 1.001

    # wrong kinds and broken files → one line, exit 2
    assert main(["-q", "sample", "--ldm", str(ae_dir / "checkpoint.pt"), "-o", str(out)]) == 2
    assert "kind 'autoencoder', but kind 'ldm' is needed" in _err(capsys)
    assert (
        main(
            [
                "-q",
                "reconstruct",
                "--autoencoder",
                str(ldm_dir / "checkpoint.pt"),
                "--data",
                str(prepared),
            ]
        )
        == 2
    )
    assert "but kind 'autoencoder' is needed" in _err(capsys)
    bad = tmp_path / "trunc.pt"
    bad.write_bytes((ae_dir / "checkpoint.pt").read_bytes()[:1000])
    assert (
        main(["-q", "encode", "--autoencoder", str(bad), "--data", str(prepared), "-o", str(enc)])
        == 2
    )
    assert "truncated or corrupt" in _err(capsys)


def test_bad_preset_and_existing_run(main, prepared, tmp_path, capsys):
    assert (
        main(
            [
                "-q",
                "train",
                "autoencoder",
                "--data",
                str(prepared),
                "-o",
                str(tmp_path / "x"),
                "--preset",
                "huge",
            ]
        )
        == 2
    )
    assert "unknown autoencoder preset" in _err(capsys)
    assert (
        main(
            [
                "-q",
                "train",
                "autoencoder",
                "--data",
                str(tmp_path),
                "-o",
                str(tmp_path / "x"),
                *AE,
                *ENGINE,
            ]
        )
        == 2
    )
    _err(capsys)
