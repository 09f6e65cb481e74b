"""realdeal: make generated 3D brain MRIs look real.

The public Python API, importable from here:

- :class:`Volume`, :func:`load_volume` — a 3D image with its geometry, and reading NIfTI.
- :class:`LatentDiffusionPipeline` — sample volumes from a trained LDM checkpoint.
- :class:`RefinerPipeline`, :class:`RefineSettings` — refine any coarse volume.
- :func:`evaluate_paired`, :func:`evaluate_unpaired` (with :class:`PairedConfig`,
  :class:`UnpairedConfig`), :func:`find_set` — the realism metrics over sets of NIfTI files.
- :class:`Plan` — the windows a refinement visits (``RefinerPipeline.plan``).

The names load lazily, so ``import realdeal`` stays light (no torch) until one is used.
Subpackages, lowest layer first (the import contracts in ``pyproject.toml``; ``a | b`` are
independent siblings): ``errors``, ``utils``, ``config``, ``runtime`` (checkpoints, devices,
seeds), ``data | diffusion`` (schedule, denoiser, samplers), ``models | inference`` (the
refiner's windowed inference), ``pipelines | presets | metrics``, ``training | official |
report``, ``demo``, and the ``realdeal`` command (``commands``, ``cli``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "Volume": "realdeal.data.io",
    "load_volume": "realdeal.data.io",
    "LatentDiffusionPipeline": "realdeal.pipelines.ldm",
    "RefinerPipeline": "realdeal.pipelines.refiner",
    "RefineSettings": "realdeal.pipelines.refiner",
    "evaluate_paired": "realdeal.metrics.suite",
    "evaluate_unpaired": "realdeal.metrics.suite",
    "PairedConfig": "realdeal.metrics.suite",
    "UnpairedConfig": "realdeal.metrics.suite",
    "find_set": "realdeal.metrics.subjects",
    "Plan": "realdeal.inference.plan",
}

__all__ = [
    "LatentDiffusionPipeline",
    "PairedConfig",
    "Plan",
    "RefineSettings",
    "RefinerPipeline",
    "UnpairedConfig",
    "Volume",
    "__version__",
    "evaluate_paired",
    "evaluate_unpaired",
    "find_set",
    "load_volume",
]

if TYPE_CHECKING:
    from realdeal.data.io import Volume, load_volume
    from realdeal.inference.plan import Plan
    from realdeal.metrics.subjects import find_set
    from realdeal.metrics.suite import (
        PairedConfig,
        UnpairedConfig,
        evaluate_paired,
        evaluate_unpaired,
    )
    from realdeal.pipelines.ldm import LatentDiffusionPipeline
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'realdeal' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
