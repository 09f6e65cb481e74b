"""Seam score: are the refiner's window boundaries visible in its output?

Consistency between windows is a concern of the paper's refiner (paper §2.2;
docs/method.md#spec-5-5) that realdeal measures rather than assumes (docs/method.md#spec-7).

For a volume and the :class:`~realdeal.inference.plan.Plan` that produced it, every pair of
face-adjacent voxels ``(v, v + e_a)`` along axis ``a`` is either a *boundary* pair (written by
different windows, or one of them kept as coarse background) or an *interior* pair (written by
the same window). The score compares the absolute intensity steps ``|x[v + e_a] − x[v]|`` of
the two groups:

* ``ratio = mean |step| across boundaries / mean |step| inside windows`` (1.0 = no seam; a
  per-window intensity offset raises it), overall and per axis (boundaries normal to that axis);
* ``ratio_p95``: the same with the 95th percentile (sensitive to seams on a few windows only);

restricted to pairs with both voxels in ``mask`` (e.g. the brain) when given. Boundaries are
spread over the whole brain, so for an image without seams both groups sample the same
gradients and the ratio is ≈ 1; that is what the original image gives.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from realdeal.errors import ConfigError
from realdeal.inference.plan import Plan, PlanConfig, make_plan

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SeamScore:
    """Result of :func:`seam_score`; ``float(score)`` is :attr:`ratio`.

    Means are in image intensity units; counts are voxel pairs. Per-axis tuples are indexed by
    the axis normal to the boundary (0 = x, 1 = y, 2 = z); NaN where an axis has no pairs.
    """

    ratio: float
    ratio_p95: float
    mean_boundary: float
    mean_interior: float
    n_boundary: int
    n_interior: int
    ratio_axis: tuple[float, float, float]
    n_boundary_axis: tuple[int, int, int]

    def __float__(self) -> float:
        return float(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ratio_axis"] = list(self.ratio_axis)
        d["n_boundary_axis"] = list(self.n_boundary_axis)
        return d


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def default_window(shape: tuple[int, ...]) -> int:
    """Window side used when no plan is given: 64 (paper) if every side ≥ 192, else 32."""
    return 64 if min(shape) >= 192 else 32


def seam_score(
    volume: np.ndarray,
    plan: Plan | np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> SeamScore:
    """Seam statistics of ``volume`` ``(X, Y, Z)`` cut by ``plan``, within ``mask`` (bool).

    ``plan`` must have ``plan.shape == volume.shape``. As the metrics hook
    (:mod:`realdeal.metrics.seam`) calls ``seam_score(image, brain_mask)``, a bool array in
    place of ``plan`` is taken as the mask, and without a plan a default wavefront plan is
    built from the mask (window :func:`default_window`, default overlap); the refine command
    should register a function bound to the plan it really used instead.
    """
    x = np.asarray(volume, dtype=np.float32)
    if x.ndim != 3:
        raise ConfigError(f"seam_score expects a 3D volume (X, Y, Z), got shape {x.shape}")
    if isinstance(plan, np.ndarray):
        if mask is not None:
            raise ConfigError("seam_score: pass the plan second and the mask third")
        plan, mask = None, plan
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != x.shape:
            raise ConfigError(f"mask shape {mask.shape} differs from volume shape {x.shape}")
    if plan is None:
        plan = make_plan(x.shape, PlanConfig(window=default_window(x.shape)), brain_mask=mask)
    if tuple(plan.shape) != x.shape:
        raise ConfigError(f"plan is for shape {plan.shape}, volume has {x.shape}")
    owner = plan.owner_map()

    boundary, interior = [], []
    ratio_axis, n_axis = [], []
    for ax in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        step = np.abs(x[b] - x[a])
        oa, ob = owner[a], owner[b]
        valid = np.ones(step.shape, bool) if mask is None else mask[a] & mask[b]
        is_b = valid & (oa != ob)
        is_i = valid & (oa == ob) & (oa >= 0)
        sb, si = step[is_b], step[is_i]
        boundary.append(sb)
        interior.append(si)
        ratio_axis.append(
            _ratio(float(sb.mean()), float(si.mean())) if sb.size and si.size else float("nan")
        )
        n_axis.append(int(sb.size))
    sb, si = np.concatenate(boundary), np.concatenate(interior)
    if not sb.size or not si.size:
        log.debug("seam_score: no boundary or no interior pairs (%d, %d)", sb.size, si.size)
    mb = float(sb.mean()) if sb.size else float("nan")
    mi = float(si.mean()) if si.size else float("nan")
    p95 = (
        _ratio(float(np.percentile(sb, 95)), float(np.percentile(si, 95)))
        if sb.size and si.size
        else float("nan")
    )
    return SeamScore(
        ratio=_ratio(mb, mi) if sb.size and si.size else float("nan"),
        ratio_p95=p95,
        mean_boundary=mb,
        mean_interior=mi,
        n_boundary=int(sb.size),
        n_interior=int(si.size),
        ratio_axis=tuple(ratio_axis),  # type: ignore[arg-type]
        n_boundary_axis=tuple(n_axis),  # type: ignore[arg-type]
    )
