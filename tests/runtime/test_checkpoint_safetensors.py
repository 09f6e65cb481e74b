"""Checkpoints in safetensors form: the same payload as the ``.pt`` file, taken by every loader
and command, giving the same outputs, and readable without realdeal (safetensors + MONAI)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realdeal.errors import InputError
from realdeal.runtime.checkpoint import (
    AutoencoderCheckpoint,
    load_checkpoint,
    model_json_path,
    read_torch_file,
    save_checkpoint,
    save_checkpoint_safetensors,
)

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "src" / "realdeal" / "demo_checkpoints"
KINDS = ("autoencoder", "ldm", "refiner")


def assert_same(a, b, where="checkpoint"):
    """Equal keys (in the same order), types and values, tensors bit for bit (a state dict may
    be a ``dict`` or an ``OrderedDict``)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), (where, type(b))
        assert list(a) == list(b), (where, list(a)[:8], list(b)[:8])
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
        return
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, (where, a, b)


def _tiny_autoencoder(path: Path) -> Path:
    from realdeal.config import to_dict
    from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    cfg = AutoencoderConfig(channels=(4, 8, 8), bottleneck=4)
    ae = Autoencoder(cfg)
    ae.train()
    with torch.no_grad():  # running BatchNorm statistics that are not the defaults
        ae(torch.rand(2, 1, 24, 32, 24) * 2 - 1)
    state = ae.state_dict()
    return save_checkpoint(path, AutoencoderCheckpoint(
        preset="cpu-small", step=3, init_steps=7, config={"model": to_dict(cfg)},
        model_config=to_dict(cfg), model=state, ema=state, image_shape=(24, 32, 24), dataset="",
    ))  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """Per kind: (training checkpoint, its slim ``.pt``, its ``.safetensors``)."""
    from tiny_ldm import tiny_ldm_checkpoint
    from tiny_refiner import tiny_refiner_checkpoint

    tmp = tmp_path_factory.mktemp("safetensors")
    (tmp / "ldm-run").mkdir()
    made = {
        "autoencoder": _tiny_autoencoder(tmp / "ae-run.pt"),
        "ldm": tiny_ldm_checkpoint(tmp / "ldm-run"),
        "refiner": tiny_refiner_checkpoint(tmp / "refiner-run.pt"),
    }
    ldm = load_checkpoint(made["ldm"])
    ldm.autoencoder = dataclasses.replace(ldm.autoencoder, preset="cpu-small", fingerprint="ab12")
    save_checkpoint(made["ldm"], dataclasses.replace(ldm, step=4, init_steps=2, ema_updates=4))
    out = {}
    for kind, src in made.items():
        slim = load_checkpoint(src, kind=kind).slimmed()
        pt = save_checkpoint(tmp / f"{kind}.pt", slim)
        st = save_checkpoint_safetensors(tmp / f"{kind}.safetensors", load_checkpoint(pt))
        out[kind] = (src, pt, st)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_keeps_every_tensor_and_field(files, kind):
    src, pt, st = files[kind]
    a, b = load_checkpoint(pt, kind=kind), load_checkpoint(st, kind=kind)
    assert type(a) is type(b) and b.slim and b.model is b.ema
    assert_same(a.to_dict(), b.to_dict())
    assert (b.step, b.total_steps) == (a.step, a.total_steps)
    # a training checkpoint is written in its slim form: the same bytes as from the slim .pt
    again = save_checkpoint_safetensors(
        st.with_name(f"{kind}-again.safetensors"), load_checkpoint(src)
    )
    assert again.read_bytes() == st.read_bytes()
    # the JSON beside it is the metadata, decoded
    from safetensors import safe_open

    with safe_open(st, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    decoded = {k: v if k == "format" else json.loads(v) for k, v in meta.items()}
    assert json.loads(model_json_path(st).read_text()) == decoded
    assert model_json_path(st).name == f"{kind}.model.json"
    assert decoded["kind"] == kind and decoded["config"] == a.config
    with pytest.raises(InputError, match="but kind 'other' is needed"):
        load_checkpoint(st, kind="other")


def test_ldm_file_keeps_the_autoencoder_under_its_prefix(files):
    from safetensors.torch import load_file

    _, pt, st = files["ldm"]
    ckpt = load_checkpoint(pt, kind="ldm")
    tensors = load_file(st)
    assert {k.removeprefix("autoencoder.") for k in tensors if k.startswith("autoencoder.")} == set(
        ckpt.autoencoder.ema
    )
    assert {k for k in tensors if not k.startswith("autoencoder.")} == set(ckpt.ema)
    meta = json.loads(model_json_path(st).read_text())
    assert meta["autoencoder_network"]["prefix"] == "autoencoder."
    assert meta["autoencoder_network"]["config"] == ckpt.autoencoder.model_config
    assert meta["extra"]["latent_scaling"] == ckpt.latent_scaling
    assert meta["init_steps"] == 2


def test_autoencoder_gives_identical_outputs(files):
    from realdeal.models.loading import load_autoencoder

    _, pt, st = files["autoencoder"]
    x = torch.rand(1, 1, 24, 32, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        a, b = (load_autoencoder(p)[0](x) for p in (pt, st))
    assert torch.equal(a, b)


def test_sample_command_gives_identical_volumes(files, tmp_path):
    from realdeal.cli import main
    from realdeal.data.io import load_volume

    out = {}
    for name, path in zip(("pt", "st"), files["ldm"][1:], strict=True):
        argv = ["-q", "sample", "--ldm", str(path), "-o", str(tmp_path / name), "-n", "1",
                "--steps", "3", "--seed", "5", "--device", "cpu"]  # fmt: skip
        assert main(argv) == 0
        out[name] = load_volume(tmp_path / name / "sample_000.nii.gz").data
    assert np.isfinite(out["pt"]).all()
    np.testing.assert_array_equal(out["pt"], out["st"])


def test_refine_command_gives_identical_volumes(files, tmp_path):
    from realdeal.cli import main
    from realdeal.data.io import load_volume
    from tiny_refiner import coarse_volumes

    [src] = coarse_volumes(tmp_path / "in", 1)
    out = {}
    for name, path in zip(("pt", "st"), files["refiner"][1:], strict=True):
        argv = ["-q", "refine", str(src), "-o", str(tmp_path / name), "--checkpoint", str(path),
                "--sampler", "ddim", "--steps", "2", "--eta", "1", "--seed", "3",
                "--device", "cpu"]  # fmt: skip
        assert main(argv) == 0
        out[name] = load_volume(tmp_path / name / src.name).data
    assert not np.array_equal(out["pt"], load_volume(src).data)
    np.testing.assert_array_equal(out["pt"], out["st"])


THIRD_PARTY = """
import json, sys
import torch
from monai.networks.nets import DiffusionModelUNet
from safetensors import safe_open
from safetensors.torch import load_file, save_file

out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    weights = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    network = json.loads(meta["network"])
    assert network["class"] == "monai.networks.nets.DiffusionModelUNet"
    unet = DiffusionModelUNet(**network["arguments"]).eval()
    own = {k: v for k, v in weights.items() if not k.startswith("autoencoder.")}
    unet.load_state_dict(own, strict=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, network["arguments"]["in_channels"], 16, 16, 16, generator=g)
    with torch.no_grad():
        y = unet(x, torch.tensor([10]))
    save_file({"y": y, **unet.state_dict()}, f"{out}/{i}.safetensors")
assert not [m for m in sys.modules if m.split(".")[0] == "realdeal"]
"""


@pytest.mark.parametrize("kind", ["ldm", "refiner"])
def test_metadata_builds_monais_unet(files, kind):
    """The ``network`` entry holds the arguments of MONAI's U-Net the weights load into."""
    from monai.networks.nets import DiffusionModelUNet
    from safetensors import safe_open
    from safetensors.torch import load_file

    st = files[kind][2]
    with safe_open(st, "pt") as f:
        network = json.loads(f.metadata()["network"])
    assert network["class"] == "monai.networks.nets.DiffusionModelUNet" and network["prefix"] == ""
    unet = DiffusionModelUNet(**network["arguments"])
    weights = {k: v for k, v in load_file(st).items() if not k.startswith("autoencoder.")}
    unet.load_state_dict(weights, strict=True)


@pytest.mark.slow
def test_a_third_party_reader_builds_the_unets(files, tmp_path):
    """safetensors + MONAI alone (no realdeal import) build the U-Nets with their weights."""
    from safetensors.torch import load_file

    from realdeal.models.loading import unet_from_checkpoint

    paths = [files["ldm"][2], files["refiner"][2], SHIPPED / "refiner.safetensors"]
    if not paths[2].is_file():
        paths.pop()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", THIRD_PARTY, str(tmp_path), *map(str, paths)],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, path in enumerate(paths):
        got = load_file(tmp_path / f"{i}.safetensors")
        ckpt = load_checkpoint(path)
        unet = unet_from_checkpoint(ckpt, path)
        for k, v in unet.state_dict().items():
            assert torch.equal(got[k], v), k
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, ckpt.model_config["in_channels"], 16, 16, 16, generator=g)
        with torch.no_grad():
            y = unet(x, torch.tensor([10]))
        torch.testing.assert_close(got["y"], y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_safetensors_match_the_pt_files_and_the_manifest(kind, tmp_path):
    pt, st = SHIPPED / f"{kind}.pt", SHIPPED / f"{kind}.safetensors"
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    sha = hashlib.sha256(st.read_bytes()).hexdigest()
    assert manifest["sha256_safetensors"][kind] == sha
    assert manifest["models"][kind]["sha256_safetensors"] == sha
    assert hashlib.sha256(pt.read_bytes()).hexdigest() == manifest["sha256"][kind]
    a = load_checkpoint(pt, kind=kind)
    assert_same(a.to_dict(), load_checkpoint(st, kind=kind).to_dict())
    # made from the .pt file again, the same bytes (and the same JSON beside it)
    again = save_checkpoint_safetensors(tmp_path / f"{kind}.safetensors", a)
    assert again.read_bytes() == st.read_bytes()
    assert model_json_path(again).read_text() == (SHIPPED / f"{kind}.model.json").read_text()


def test_a_run_started_from_a_shipped_safetensors_keeps_its_lineage():
    from realdeal.demo import _init_record

    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    rec = _init_record("refiner", SHIPPED / "refiner.safetensors", "0" * 64)
    assert {k: v for k, v in rec.items() if k != "path"} == manifest["models"]["refiner"]


def test_import_official_takes_a_safetensors_autoencoder(files):
    from realdeal.official.importer import embedded_autoencoder

    _, pt, st = files["autoencoder"]
    a, b = embedded_autoencoder(pt), embedded_autoencoder(st)
    assert (a.model_config, a.preset) == (b.model_config, b.preset)
    assert_same(dict(a.ema), dict(b.ema))


def test_bad_safetensors_files_are_one_clear_error(files, tmp_path):
    from safetensors.torch import save_file

    st = files["refiner"][2]
    data = st.read_bytes()
    cases = {
        "cut.safetensors": (data[: len(data) // 2], "truncated or corrupt"),
        "head.safetensors": (data[:40], "not a readable safetensors file"),
        "notes.safetensors": (b"step: 3\n" * 20, r"not a readable safetensors file \(a text file"),
        "empty.safetensors": (b"", r"an empty file"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=match) as info:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(InputError, match="not a realdeal checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    # the form is told by the content, not the name; a torch reader names what it found
    renamed = tmp_path / "refiner.pt"
    renamed.write_bytes(data)
    assert load_checkpoint(renamed).step == load_checkpoint(st).step
    with pytest.raises(InputError, match=r"not a PyTorch checkpoint \(a safetensors file\)"):
        read_torch_file(renamed)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_bad_safetensors_on_the_command_line_exits_2_in_one_line(tmp_path, capsys):
    from realdeal.cli import main

    ck = tmp_path / "ldm.safetensors"
    ck.write_text("".join(f"line {i}\n" for i in range(32)))
    assert main(["-q", "sample", "--ldm", str(ck), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(ck) in err and "not a readable safetensors file" in err
