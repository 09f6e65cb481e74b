"""Presets and overrides: paper sizes, cpu-small sizes, typed round trip, clear errors, one module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from realdeal.config import from_dict, to_dict
from realdeal.errors import ConfigError
from realdeal.models.autoencoder import latent_shape
from realdeal.presets import (
    CLEAR,
    KINDS,
    PRESETS,
    QUICK_OVERRIDES,
    AutoencoderRunConfig,
    LDMRunConfig,
    RefinerRunConfig,
    preset,
    with_overrides,
)


def test_paper_presets_follow_the_spec():
    ae, ldm = preset("autoencoder", "paper"), preset("ldm", "paper")
    assert ae.model.channels == (64, 128, 64) and ae.model.bottleneck == 32 and ae.crop is None
    assert (ae.train.lr, ae.train.weight_decay, ae.train.batch_size) == (1e-3, 1e-5, 4)
    assert latent_shape((224, 288, 224), ae.model) == (4, 56, 72, 56)
    assert ldm.unet.channels == (256, 512, 768) and ldm.schedule.prediction_type == "v_prediction"
    assert (ldm.schedule.beta_start, ldm.schedule.beta_end, ldm.schedule.num_train_timesteps) == (
        0.0015,
        0.0205,
        1000,
    )
    assert (ldm.train.lr, ldm.train.batch_size) == (2.5e-5, 4)


def test_cpu_small_fits_the_2mm_cohort():
    ae, ldm = preset("autoencoder", "cpu-small"), preset("ldm", "cpu-small")
    lat = latent_shape((96, 112, 96), ae.model)
    assert lat == (4, 24, 28, 24)
    assert all(s % ldm.unet.size_multiple == 0 for s in lat[1:])
    assert all(c % 4 == 0 for c in ae.crop)


@pytest.mark.parametrize(
    "cls,kind",
    [(AutoencoderRunConfig, "autoencoder"), (LDMRunConfig, "ldm"), (RefinerRunConfig, "refiner")],
)
def test_round_trip_and_overrides(cls, kind):
    cfg = preset(kind, "cpu-small")
    assert from_dict(cls, to_dict(cfg)) == cfg
    new = with_overrides(cfg, {"train": {"lr": 1e-4, "steps": None}, "preset": None})
    assert new.train.lr == 1e-4 and new.train.steps == cfg.train.steps and new.preset == "cpu-small"


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown"):
        preset("ldm", "gigantic")
    with pytest.raises(ConfigError):
        with_overrides(preset("autoencoder", "paper"), {"crop": [30, 32, 32]})
    with pytest.raises(ConfigError):
        with_overrides(preset("ldm", "paper"), {"unet": {"channels": [32, 64]}})
    with pytest.raises(ConfigError, match="head channels"):
        with_overrides(preset("ldm", "cpu-small"), {"unet": {"num_head_channels": [0, 0, 0]}})
    with pytest.raises(ConfigError, match="model kind"):
        preset("vae", "paper")


@pytest.mark.slow
def test_every_kind_has_every_preset_without_importing_training():
    """Presets live in one module: no registration by importing ``realdeal.training``."""
    code = (
        "import sys; from realdeal.presets import KINDS, PRESETS, preset; "
        "[preset(k, n) for k in KINDS for n in PRESETS]; "
        "print(sorted(m for m in sys.modules if m.startswith('realdeal.training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert {preset(k, n).preset for k in KINDS for n in PRESETS} == set(PRESETS)


@pytest.mark.parametrize("kind", KINDS)
def test_quick_overrides_apply_to_cpu_small(kind):
    cfg = with_overrides(preset(kind, "cpu-small"), QUICK_OVERRIDES[kind])
    assert cfg.train.steps == 6 and cfg.preset == "cpu-small"


def test_clear_sets_an_optional_field_to_none():
    cfg = with_overrides(preset("autoencoder", "cpu-small"), {"crop": CLEAR, "train": {"lr": None}})
    assert cfg.crop is None and cfg.train.lr == preset("autoencoder", "cpu-small").train.lr
