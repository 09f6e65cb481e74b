"""One sampling configuration for both pipelines: ``SamplingConfig`` (which ``RefineSettings``
extends) takes a sampler name with overrides or a ready sampler object, and both give the same
volumes as the name they stand for."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from realdeal.diffusion.registry import DEFAULT_SAMPLING, SamplingConfig
from realdeal.diffusion.samplers import DDIMSampler
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.errors import ConfigError
from realdeal.pipelines.ldm import LatentDiffusionPipeline
from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings
from tiny_ldm import tiny_ldm_checkpoint
from tiny_refiner import tiny_refiner_checkpoint


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    return LatentDiffusionPipeline.from_checkpoint(
        tiny_ldm_checkpoint(tmp_path_factory.mktemp("l"))
    )


@pytest.fixture(scope="module")
def refiner(tmp_path_factory):
    path = tiny_refiner_checkpoint(tmp_path_factory.mktemp("r") / "refiner.pt")
    return RefinerPipeline.from_checkpoint(path)


def test_refine_settings_share_the_sampling_fields():
    shared = {f.name for f in dataclasses.fields(SamplingConfig)}
    assert shared == {"sampler", "steps", "eta", "variance", "spacing"}
    assert shared <= {f.name for f in dataclasses.fields(RefineSettings)}
    assert issubclass(RefineSettings, SamplingConfig)
    # one resolution rule: the refiner's settings resolve as a SamplingConfig does
    s = RefineSettings(steps=4)
    assert s.resolve(DEFAULT_SAMPLING["residual"]) == SamplingConfig(steps=4).resolve(
        DEFAULT_SAMPLING["residual"]
    )


def test_ldm_takes_a_config_a_name_or_a_sampler_object(ldm):
    kw = dict(seed=3, show_progress=False)
    named = ldm(1, sampler="ddim", steps=3, eta=1.0, **kw)
    by_config = ldm(1, SamplingConfig("ddim", steps=3, eta=1.0), **kw)
    by_object = ldm(1, DDIMSampler(ldm.schedule, 3, eta=1.0), **kw)
    overridden = ldm(1, SamplingConfig("ddim", steps=8, eta=1.0), steps=3, **kw)
    for other in (by_config, by_object, overridden):
        torch.testing.assert_close(other, named, rtol=0, atol=0)
    assert not torch.equal(named, ldm(1, sampler="ddim", steps=4, eta=1.0, **kw))


def test_num_steps_is_the_old_name_of_steps(ldm):
    with pytest.warns(DeprecationWarning, match="steps"):
        old = ldm(1, sampler="ddim", num_steps=2, seed=1, show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = ldm(1, sampler="ddim", steps=2, seed=1, show_progress=False)
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="disagree"), pytest.warns(DeprecationWarning):
        ldm(1, steps=3, num_steps=2, show_progress=False)


def test_refiner_takes_a_sampler_object(refiner):
    coarse = np.clip(np.random.default_rng(0).normal(-0.2, 0.3, (20, 20, 20)), -1, 1)
    coarse = coarse.astype(np.float32)
    named = RefineSettings(sampler="ddim", steps=2, eta=1.0, seed=5, skip_background=False)
    obj = dataclasses.replace(
        named, sampler=DDIMSampler(refiner.schedule, 2, eta=1.0, clip_x0=False), steps=None,
        eta=None,
    )  # fmt: skip
    a = refiner.refine_array(coarse, named).refined
    b = refiner.refine_array(coarse, obj).refined
    np.testing.assert_array_equal(a, b)
    assert refiner.sampling(obj).steps == 2 and refiner.sampling(obj).sampler == "DDIMSampler"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(sampler="euler"), "unknown sampler"),
        (dict(sampler=object()), "sampler object"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(spacing="cubic"), "spacing"),
        (dict(variance="wild"), "variance"),
    ],
)
def test_bad_sampling_settings_are_refused_where_made(kwargs, message):
    for cls in (SamplingConfig, RefineSettings):
        with pytest.raises(ConfigError, match=message):
            cls(**kwargs)


def test_a_sampler_object_carries_its_own_settings():
    smp = DDIMSampler(NoiseSchedule(), 4)
    with pytest.raises(ConfigError, match="leave steps unset"):
        SamplingConfig(smp, steps=3)
    assert SamplingConfig.of(smp).make(None, DEFAULT_SAMPLING["ldm"]) is smp  # type: ignore[arg-type]
    assert SamplingConfig.of("dpmpp").sampler == "dpm++"
