"""``realdeal train ldm --latents DIR``: an LDM trained on latents alone, without the images."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from realdeal import cli
from realdeal.config import to_dict
from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig
from realdeal.runtime.checkpoint import AutoencoderCheckpoint, save_checkpoint

ENGINE = ["--steps", "3", "--batch-size", "2", "--log-every", "1", "--checkpoint-every", "3",
          "--precision", "fp32", "--device", "cpu"]  # fmt: skip
LDM = ["--preset", "cpu-small", "--channels", "8", "16", "--attention", "0", "1",
       "--head-channels", "0", "16", "--norm-groups", "8", "--num-res-blocks", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A prepared dataset, an autoencoder checkpoint, and its latents (``realdeal encode``)."""
    from synthetic import prepared_phantoms

    root = tmp_path_factory.mktemp("latents")
    prepared = prepared_phantoms(root / "ds", 5, 0.2)
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(channels=(4, 8, 8), bottleneck=4)).eval()
    ckpt = save_checkpoint(root / "ae.pt", AutoencoderCheckpoint(
        config={}, model_config=to_dict(ae.config), model=ae.state_dict(), ema=ae.state_dict()))  # fmt: skip
    enc = root / "enc"
    argv = ["-q", "encode", "--autoencoder", str(ckpt), "--data", str(prepared), "-o", str(enc),
            "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    return prepared, ckpt, enc


def _train(prepared, ckpt, out, *extra):
    return cli.main(["-q", "train", "ldm", "--data", str(prepared), "--autoencoder", str(ckpt),
                     "-o", str(out), *LDM, *ENGINE, *extra])  # fmt: skip


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


def test_latents_train_the_same_model_as_encoding_and_need_no_images(setup, tmp_path):
    prepared, ckpt, enc = setup
    assert _train(prepared, ckpt, tmp_path / "encoded") == 0
    # the same run from the latents, on a copy of the dataset without its images
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("dataset.json", "subjects.csv"):
        shutil.copy(prepared / name, bare / name)
    assert _train(bare, ckpt, tmp_path / "read", "--latents", str(enc)) == 0
    a = torch.load(tmp_path / "encoded" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "read" / "checkpoint.pt", weights_only=True)
    assert a["extra"]["latent_scaling"] == b["extra"]["latent_scaling"]
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    assert not (tmp_path / "read" / "latents").exists()  # nothing encoded or cached
    inputs = json.loads((tmp_path / "read" / "inputs.json").read_text())["inputs"]
    assert len(inputs["latents"]) == 64

    # a float16 copy (to move latents about) is read as float32
    half = tmp_path / "half"
    half.mkdir()
    for f in enc.glob("*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata()
        save_file({"latent": load_file(f)["latent"].half()}, str(half / f.name), metadata=meta)
    assert _train(bare, ckpt, tmp_path / "half-run", "--latents", str(half)) == 0
    c = torch.load(tmp_path / "half-run" / "checkpoint.pt", weights_only=True)
    for lo, lo16 in zip(a["extra"]["latent_scaling"]["lo"], c["extra"]["latent_scaling"]["lo"],
                        strict=True):  # fmt: skip
        assert lo16 == pytest.approx(lo, abs=1e-3)


def test_latents_of_another_autoencoder_or_missing_ones_are_refused(setup, tmp_path, capsys):
    prepared, ckpt, enc = setup
    torch.manual_seed(1)
    other = Autoencoder(AutoencoderConfig(channels=(4, 8, 8), bottleneck=4)).eval()
    other_ckpt = save_checkpoint(tmp_path / "other.pt", AutoencoderCheckpoint(
        config={}, model_config=to_dict(other.config), model=other.state_dict(),
        ema=other.state_dict()))  # fmt: skip
    out = tmp_path / "run"
    assert _train(prepared, other_ckpt, out, "--latents", str(enc)) == 2
    err = _err(capsys)
    assert "was encoded by autoencoder" in err and "--autoencoder" in err, err
    partial = tmp_path / "partial"
    shutil.copytree(enc, partial)
    victim = sorted(partial.glob("*.safetensors"))[0]
    victim.unlink()
    assert _train(prepared, ckpt, out, "--latents", str(partial)) == 2
    assert f"has no latent of {victim.stem}" in _err(capsys)
    assert _train(prepared, ckpt, out, "--latents", str(tmp_path / "nowhere")) == 2
    assert "--latents: no such folder" in _err(capsys)
    assert not out.exists()  # nothing written by any refusal
