"""What a resumed run may change: :func:`realdeal.training.run_folder.resume_conflicts`."""

from __future__ import annotations

from realdeal.config import to_dict
from realdeal.presets import LDMRunConfig, preset, with_overrides
from realdeal.training.run_folder import resume_conflicts


def _older(cfg: LDMRunConfig) -> dict:
    """``cfg`` as a realdeal from before ``schedule.snr_scale`` existed stored it."""
    d = to_dict(cfg)
    del d["schedule"]["snr_scale"]
    return d


def test_a_field_the_stored_run_lacks_is_compared_as_its_default():
    cfg = preset("ldm", "cpu-small")
    stored = _older(cfg)
    shifted = to_dict(with_overrides(cfg, {"schedule": {"snr_scale": 8.0}}))
    assert shifted["schedule"]["snr_scale"] == 8.0
    assert resume_conflicts(stored, shifted, LDMRunConfig) == [("schedule.snr_scale", 1.0, 8.0)]
    # the run as it was trained (the default), and the fields a resume may change, pass
    same = to_dict(with_overrides(cfg, {"train": {"steps": cfg.train.steps * 2}}))
    assert resume_conflicts(stored, same, LDMRunConfig) == []
    # without the run's config class a field only one side has cannot be judged
    assert resume_conflicts(stored, shifted) == []


def test_changed_fields_are_listed_whatever_the_class():
    cfg = preset("ldm", "cpu-small")
    new = to_dict(
        with_overrides(cfg, {"train": {"lr": cfg.train.lr * 2}, "schedule": {"snr_scale": 4.0}})
    )
    got = resume_conflicts(to_dict(cfg), new, LDMRunConfig)
    assert [k for k, _, _ in got] == ["schedule.snr_scale", "train.lr"]
