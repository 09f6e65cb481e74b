"""Same seed, same sample — whatever the batch size and number of ranks, for every sampler.

Every random draw of a chain (its start noise and each stochastic step's noise) comes from a
stream of its own sample (:class:`realdeal.runtime.rng.SampleStreams`), so sample ``i`` of
``pipe(n, seed=s)`` is ``pipe(1, seed=s + i)[0]`` for any ``batch_size`` and any split of the
indices between torchrun ranks. One suite over every registered sampler (and DDIM's η and
variance choices): a sampler added to the registry is covered here automatically.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from realdeal.diffusion import registry
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import make_sampler
from realdeal.diffusion.samplers import sample
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.runtime.rng import STEP_NOISE_SALT, SampleStreams, per_sample_randn
from tiny_ldm import tiny_ldm_checkpoint


def _variants() -> list[tuple[str, float | None, str]]:
    """Every registered sampler; those taking DDIM's η with η 0 and 1, and (η 1) the analytic
    variance too. ``(name, eta, variance)``."""
    out = []
    for name, spec in registry.SAMPLERS.items():
        if spec.eta:
            out += [(name, 0.0, "fixed"), (name, 1.0, "fixed"), (name, 1.0, "analytic")]
        else:
            out.append((name, None, "fixed"))
    return out


VARIANTS = _variants()
IDS = [f"{n}-eta{e}-{v}" for n, e, v in VARIANTS]


def test_every_registered_sampler_is_covered():
    assert {n for n, _, _ in VARIANTS} == set(registry.SAMPLERS)


# -- the sampling loop: per-row streams ---------------------------------------------------


def _net():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 2, 1)
    return lambda x, t: conv(x) * (t.float().view(-1, 1, 1, 1, 1) / 1000 + 0.1)


@pytest.mark.parametrize("name,eta,variance", VARIANTS, ids=IDS)
def test_sampling_loop_rows_do_not_depend_on_their_batch(name, eta, variance):
    """With per-sample streams, a row's chain is the same in batches of 1, 2 and 3 and in any
    position; with one generator per batch (the old way) a stochastic sampler's is not."""
    s = NoiseSchedule()
    smp = make_sampler(name, s, 6, eta=eta or 0.0, variance=variance)
    den = Denoiser(_net(), s)
    seeds = [11, 12, 13]
    shape = (2, 3, 3, 3)

    def run(batch: list[int]) -> torch.Tensor:
        x_T = per_sample_randn(shape, batch)
        streams = SampleStreams(batch, salt=STEP_NOISE_SALT)
        return sample(den, smp, x_T, generator=streams, show_progress=False)

    alone = torch.cat([run([k]) for k in seeds])
    for size in (2, 3):
        batched = torch.cat([run(seeds[i : i + size]) for i in range(0, 3, size)])
        torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-6)
    reordered = run([13, 11, 12])
    torch.testing.assert_close(reordered, alone[[2, 0, 1]], rtol=1e-6, atol=1e-6)
    # the steps' streams matter exactly for the stochastic samplers (so the test means something)
    x_T = per_sample_randn(shape, seeds)
    other = sample(den, smp, x_T, generator=SampleStreams(seeds, salt=1), show_progress=False)
    stochastic = registry.draws_noise(name, eta or 0.0, variance)
    assert torch.equal(other, alone) != stochastic


def test_sample_streams_draw_row_by_row_and_advance():
    st = SampleStreams([5, 6], salt=3)
    a = st.randn((2, 4))
    assert torch.equal(a[0], torch.randn(4, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(a[1], torch.randn(4, generator=torch.Generator().manual_seed(9)))
    b = st.randn((2, 4))
    assert not torch.equal(a, b)  # each stream advances
    sub = SampleStreams([5, 6], salt=3)
    sub.randn((2, 4))
    assert torch.equal(sub[1:].randn((1, 4))[0], b[1])  # a slice shares the generators
    with pytest.raises(ValueError, match="2 streams"):
        st.randn((3, 4))


# -- the LDM pipeline and save_samples ----------------------------------------------------


@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ldm"))


@pytest.fixture(scope="module")
def pipe(ldm_checkpoint):
    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    return LatentDiffusionPipeline.from_checkpoint(ldm_checkpoint)


TOL = dict(rtol=0, atol=1e-5)  # real convolutions round differently in batches of other sizes


LDM_VARIANTS = [(n, e) for n, e, v in VARIANTS if v == "fixed"]  # the pipeline has no variance


@pytest.mark.parametrize("name,eta", LDM_VARIANTS, ids=[f"{n}-eta{e}" for n, e in LDM_VARIANTS])
def test_ldm_sample_depends_only_on_its_seed(pipe, name, eta):
    kw = dict(sampler=name, steps=3, eta=eta, show_progress=False)
    by_size = [pipe(3, seed=1, batch_size=b, **kw) for b in (1, 2, 3)]
    for other in by_size[1:]:
        torch.testing.assert_close(other, by_size[0], **TOL)
    torch.testing.assert_close(
        pipe(2, seed=1, batch_size=2, **kw)[1], pipe(1, seed=2, **kw)[0], **TOL
    )
    # sample i is seed + i's own sample (the rows differ, so the comparison means something)
    alone = torch.cat([pipe(1, seed=1 + i, **kw) for i in range(3)])
    torch.testing.assert_close(by_size[2], alone, **TOL)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)


def test_deterministic_ldm_samplers_keep_their_start_noise(pipe):
    """DDIM η = 0 and DPM-Solver++ draw only the start noise, which is seed + i's first draw
    on CPU as before: their samples are what they were."""
    from realdeal.diffusion.denoiser import Denoiser as D

    x_T = torch.randn(pipe.latent_shape, generator=torch.Generator().manual_seed(7))[None]
    smp = make_sampler("dpm++", pipe.schedule, 3)
    z = sample(D(pipe.unet, pipe.schedule), smp, x_T, show_progress=False)
    expected = pipe.autoencoder.decode(pipe.scaler.inverse(z.float())).float()[:, 0]
    got = pipe(1, sampler="dpm++", steps=3, seed=7, show_progress=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_save_samples_keeps_each_index_seed_across_ranks_and_batch_sizes(
    pipe, tmp_path, monkeypatch, name
):
    """Ranks take whole batches (torchrun's sharding, simulated: two ranks in turn); the files
    equal a one-process run's with another batch size."""
    from realdeal.data.dataset import PreparedDataset
    from realdeal.data.io import load_volume
    from realdeal.pipelines import ldm
    from realdeal.runtime.distributed import DistInfo

    ds = PreparedDataset(pipe.checkpoint.dataset)
    reference = ds.load_image(ds.ids()[0])
    kw = dict(sampler=name, steps=3, eta=1.0 if name == "ddim" else None, seed=4)
    one = ldm.save_samples(pipe, 5, tmp_path / "one", reference, {}, batch_size=1, **kw)
    monkeypatch.setattr(ldm, "gather_objects", lambda obj, dist: [obj])
    for rank in (0, 1):  # rank 0 writes batches 0 and 2 (indices 0, 1, 4), rank 1 batch 1
        ldm.save_samples(pipe, 5, tmp_path / "two", reference, {}, batch_size=2,
                         dist=DistInfo(rank=rank, world_size=2), **kw)  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == [f"sample_{i:03d}.nii.gz" for i in range(5)] + ["sample_config.json"]
    for path in one:
        a = load_volume(path).data
        b = load_volume(tmp_path / "two" / Path(path).name).data
        torch.testing.assert_close(torch.from_numpy(b), torch.from_numpy(a), **TOL)
    single = pipe(1, seed=4 + 3, sampler=name, steps=3, eta=kw["eta"], show_progress=False)
    torch.testing.assert_close(torch.from_numpy(load_volume(one[3]).data), single[0], **TOL)
