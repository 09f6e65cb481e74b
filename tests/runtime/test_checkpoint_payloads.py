"""Typed checkpoint payloads: every kind round-trips, files written before them still read,
and a payload writes back exactly the keys and values the file had (same order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from realdeal.runtime.checkpoint import (
    FORMAT,
    AutoencoderCheckpoint,
    EmbeddedAutoencoder,
    LDMCheckpoint,
    RefinerCheckpoint,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "src" / "realdeal" / "demo_checkpoints"
W = {"w": torch.arange(3.0)}
AE_CONFIG = {"channels": [4, 8], "bottleneck": 4}


def assert_same(a, b, where="checkpoint"):
    """Equal keys (in the same order), types and values, tensors bit for bit."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), (where, list(a), list(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, (where, a, b)


def _common(**kw):
    rng = [{"torch": torch.ByteTensor([1, 2])}]
    state = dict(
        ema_updates=5, optimizer={"state": {}, "param_groups": []}, grad_scaler={}, rng=rng
    )
    return dict(preset="cpu-small", step=5, config={"train": {"lr": 0.001}},
                model_config={"a": [1, 2]}, model=W, ema=W, **state, **kw)  # fmt: skip


PAYLOADS = {
    "autoencoder": lambda: AutoencoderCheckpoint(
        **_common(), image_shape=(8, 12, 8), dataset="/data/prepared"
    ),
    "ldm": lambda: LDMCheckpoint(
        **_common(),
        latent_scaling={"lo": [0.0] * 4, "hi": [1.0] * 4},
        latent_shape=(4, 2, 3, 2),
        image_shape=(8, 12, 8),
        dataset="/data/prepared",
        autoencoder=EmbeddedAutoencoder(
            model_config=AE_CONFIG, preset="cpu-small", ema=W, fingerprint="abc"
        ),
    ),
    "refiner": lambda: RefinerCheckpoint(
        **_common(),
        window=16,
        image_shape=(8, 12, 8),
        spacing=(2.0, 2.0, 2.0),
        scaler={"low": 0.0, "high": 900.0},
        dataset="/data/prepared",
    ),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_each_kind_round_trips(tmp_path, kind):
    payload = PAYLOADS[kind]()
    back = load_checkpoint(save_checkpoint(tmp_path / "c.pt", payload), kind=kind)
    assert type(back) is type(payload) and back.kind == kind
    assert_same(back.to_dict(), payload.to_dict())
    assert back.resumable and not back.slimmed().resumable
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["scaler"] == {} and raw["kind"] == kind


def _old_engine_dict(kind: str) -> dict:
    """A checkpoint dict exactly as the engine of commit 0a41e69 wrote it."""
    extra = {
        "autoencoder": {"image_shape": [8, 12, 8], "dataset": "/d"},
        "ldm": {
            "latent_scaling": {"lo": [0.1] * 4, "hi": [0.9] * 4},
            "latent_shape": [4, 2, 3, 2],
            "image_shape": [8, 12, 8],
            "dataset": "/d",
            "autoencoder": {
                "model_config": json.dumps(AE_CONFIG), "preset": "", "ema": W, "fingerprint": "f"
            },
        },
        "refiner": {"window": 8, "image_shape": [8, 12, 8], "spacing": [2.0, 2.0, 2.0],
                    "scaler": {"low": 1.5, "high": 700.0}, "dataset": "/d"},
    }[kind]  # fmt: skip
    return {
        "format": FORMAT,
        "kind": kind,
        "preset": "cpu-small",
        "step": 7,
        "config": json.dumps(
            {"preset": "cpu-small", "train": {"lr": 0.001, "betas": [0.9, 0.999]}}
        ),
        "model_config": json.dumps({"channels": [8, 8], "x": None, "f": 0.1}),
        "model": W,
        "ema": {"w": W["w"] + 1},
        "ema_updates": 7,
        "optimizer": {"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": [{"lr": 0.1}]},
        "scaler": {},
        "rng": [{"torch": torch.ByteTensor([3, 4])}],
        "extra": extra,
    }


def _old_import_dict(kind: str) -> dict:
    """A checkpoint dict as the importer of commit 0a41e69 wrote it (no training state)."""
    d = _old_engine_dict(kind)
    for k in ("ema_updates", "optimizer", "scaler", "rng"):
        del d[k]
    d["step"] = 0
    d["extra"]["imported_from"] = {"file": "x.pth", "epoch": 3, "best_loss": 0.5}
    if kind == "refiner":
        del d["extra"]["scaler"]
    return d


@pytest.mark.parametrize("make", [_old_engine_dict, _old_import_dict])
@pytest.mark.parametrize("kind", ["autoencoder", "ldm", "refiner"])
def test_files_written_before_read_and_write_back_unchanged(tmp_path, kind, make):
    old = make(kind)
    torch.save(old, tmp_path / "old.pt")
    payload = load_checkpoint(tmp_path / "old.pt", kind=kind)
    assert payload.step == old["step"] and payload.preset == "cpu-small"
    assert payload.config["train"]["betas"] == [0.9, 0.999]
    save_checkpoint(tmp_path / "new.pt", payload)
    assert_same(torch.load(tmp_path / "new.pt", weights_only=True), old)
    if kind == "ldm":
        assert payload.autoencoder.model_config == AE_CONFIG and payload.latent_shape == (
            4,
            2,
            3,
            2,
        )
    if kind == "refiner":
        assert payload.window == 8 and payload.spacing == (2.0, 2.0, 2.0)


def test_old_slim_export_keeps_its_keys_and_values(tmp_path):
    """The demo export's slim files: same key set and values as commit 0a41e69 wrote."""
    full = _old_engine_dict("refiner")
    torch.save(full, tmp_path / "full.pt")
    save_checkpoint(tmp_path / "slim.pt", load_checkpoint(tmp_path / "full.pt").slimmed())
    slim = torch.load(tmp_path / "slim.pt", weights_only=True)
    keep = ("format", "kind", "preset", "config", "model_config", "step", "ema_updates", "extra")
    old = {k: full[k] for k in keep}
    old.update(model=full["ema"], ema=full["ema"], optimizer={}, scaler={}, rng={}, slim=True)
    assert sorted(slim) == sorted(old)
    assert_same({k: slim[k] for k in old}, old)


def test_missing_fields_take_the_documented_defaults(tmp_path):
    torch.save(
        {"format": FORMAT, "kind": "refiner", "config": json.dumps({"window": 32}),
         "model_config": "{}", "model": W},
        tmp_path / "r.pt",
    )  # fmt: skip
    r = load_checkpoint(tmp_path / "r.pt")
    assert isinstance(r, RefinerCheckpoint)
    assert (r.window, r.spacing, r.scaler, r.dataset, r.step, r.preset) == (
        32,
        None,
        None,
        None,
        0,
        "",
    )
    assert r.ema is None and r.weights() is r.model and not r.resumable


@pytest.mark.parametrize(
    "path, kind", [(SHIPPED / f"{k}.pt", k) for k in ("autoencoder", "ldm", "refiner")]
)
def test_shipped_demo_checkpoints_read_and_write_back_unchanged(tmp_path, path, kind):
    payload = load_checkpoint(path, kind=kind)
    assert payload.step > 0 and not payload.resumable
    save_checkpoint(tmp_path / "c.pt", payload)
    raw = torch.load(path, weights_only=True)
    new = torch.load(tmp_path / "c.pt", weights_only=True)
    assert sorted(new) == sorted(raw)
    assert_same({k: new[k] for k in raw}, raw)
