"""Random generators and seeds: per-sample seeds, fresh generators, checkpointable RNG state."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state is what we restore
    torch.manual_seed(seed)


def sample_seed(run_seed: int, g: int) -> int:
    """Seed of the run's ``g``-th sample (fits in int64)."""
    return (run_seed * 1_000_003 + g * 7_919 + 12_345) % (2**62)


def generator_for(seed: int | torch.Tensor, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def sample_randn(shape: tuple[int, ...], seed: int | torch.Tensor, salt: int = 0) -> torch.Tensor:
    """One sample's standard normal draw: row ``i`` of :func:`per_sample_randn` for ``seeds[i]``."""
    return torch.randn(shape, generator=generator_for(int(seed) + salt))


def sample_randint(high: int, seed: int | torch.Tensor, salt: int = 0) -> torch.Tensor:
    """One sample's integer in ``[0, high)`` (0-d long): entry ``i`` of :func:`per_sample_randint`."""
    return torch.randint(0, high, (1,), generator=generator_for(int(seed) + salt))[0]


def batch_draws(task: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A training task's per-sample random draws for ``batch`` (keys ``task.DRAWN``).

    The training engine makes them with each item (``task.draws(item)``, in the data-loading
    workers when there are any: drawing them is most of a small network's step on a GPU);
    a batch made by hand gets the same numbers drawn here, one sample at a time.
    """
    if all(k in batch for k in task.DRAWN):
        return {k: batch[k] for k in task.DRAWN}
    items = [
        task.draws({k: v[i].cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        for i in range(len(batch["seed"]))
    ]
    return {k: torch.stack([it[k] for it in items]) for k in task.DRAWN}


def per_sample_randn(
    shape: tuple[int, ...], seeds: torch.Tensor | Sequence[int], salt: int = 0
) -> torch.Tensor:
    """Standard normal ``(B, *shape)`` on CPU; row ``i`` depends only on ``seeds[i]`` and ``salt``."""
    return torch.stack([torch.randn(shape, generator=generator_for(int(s) + salt)) for s in seeds])


def per_sample_randint(high: int, seeds: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """One integer in ``[0, high)`` per sample, ``(B,)`` long on CPU."""
    return torch.cat(
        [torch.randint(0, high, (1,), generator=generator_for(int(s) + salt)) for s in seeds]
    )


#: Salt of the stream a sampling chain's steps draw their noise from (its start noise uses the
#: sample's seed itself, salt 0). Inference seeds are consecutive (sample ``i`` of a run has
#: seed ``seed + i``), so a small salt would replay a neighbouring sample's start noise; this one
#: is far beyond any sample count.
STEP_NOISE_SALT = 1 << 40


class SampleStreams:
    """The random streams of a batch, one per row (sample): row ``i`` draws from its own
    generator, seeded with ``seeds[i] + salt`` on ``device``.

    A sampler given these (in place of one ``torch.Generator``) draws every noise tensor row by
    row (:meth:`randn`), so a sample's numbers depend only on its seed and on the draws it has
    made before — not on the batch it shares: its size, its other rows, its position. Each
    stream advances as it is drawn from, as a generator does.
    """

    def __init__(
        self,
        seeds: Iterable[int | torch.Tensor],
        salt: int = 0,
        device: torch.device | str = "cpu",
        *,
        _generators: list[torch.Generator] | None = None,
    ):
        self.seeds = [int(s) for s in seeds]
        self.salt = int(salt)
        self.generators = _generators or [generator_for(s + self.salt, device) for s in self.seeds]
        if len(self.generators) != len(self.seeds):
            raise ValueError("one generator per seed")

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, rows: slice) -> SampleStreams:
        """The streams of ``rows`` (the same generators: drawing from either advances both)."""
        if not isinstance(rows, slice):
            raise TypeError("SampleStreams take a slice of rows")
        return SampleStreams(self.seeds[rows], self.salt, _generators=self.generators[rows])

    def randn(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Standard normal ``shape`` = ``(len(self), ...)``: row ``i`` from stream ``i``, drawn
        on that stream's device and moved to ``device``."""
        shape = tuple(int(n) for n in shape)
        if not shape or shape[0] != len(self):
            raise ValueError(f"{len(self)} streams cannot draw a batch of shape {shape}")
        rows = [
            torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype)
            for g in self.generators
        ]
        out = torch.cat(rows) if rows else torch.empty(shape, dtype=dtype)
        return out if device is None else out.to(device)


NoiseSource = torch.Generator | SampleStreams | None
"""Where a sampler's noise comes from: one generator for the whole batch, per-row
:class:`SampleStreams`, or ``None`` (torch's global generator)."""


def randn(
    shape: Sequence[int],
    source: NoiseSource = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal ``shape`` drawn from ``source`` (see :data:`NoiseSource`) on ``device``."""
    if isinstance(source, SampleStreams):
        return source.randn(shape, device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=source, device=device, dtype=dtype)


def rng_state() -> dict[str, torch.Tensor]:
    """Global RNG states as tensors (checkpointable with ``weights_only=True``)."""
    np_state = np.random.get_state()  # noqa: NPY002
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_meta": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(list(py_state[1]), dtype=torch.int64),
        "python_version": torch.tensor([py_state[0]], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    # a checkpoint loaded with map_location="cuda" puts these byte tensors on the GPU too;
    # torch and CUDA take their generator states as CPU ByteTensors only
    state = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    torch.set_rng_state(state["torch"])
    meta = state["numpy_meta"].tolist()
    np_state = (
        "MT19937",
        state["numpy_keys"].numpy().astype(np.uint32),
        meta[0],
        meta[1],
        float(state["numpy_gauss"][0]),
    )
    np.random.set_state(np_state)  # noqa: NPY002 - restoring the legacy global state
    random.setstate((int(state["python_version"][0]), tuple(state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
