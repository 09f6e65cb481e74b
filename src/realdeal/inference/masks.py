"""Training masks for the refiner: which part of a window the model generates.

The paper's masks: paper §2.2 (docs/method.md#spec-5); the wavefront plan's are realdeal's
(docs/method.md#spec-7).

A mask is a bool array of the window's shape ``(X, Y, Z)``; True = to generate (``M = 1``),
False = known (the clean original is shown there). The paper trains on the full mask (10 %) and
six half masks (90 %): ``M = 1`` on the left, right, posterior, anterior, inferior or superior
half. Those are exactly the masks of the official traversal. Our wavefront plan
(:mod:`realdeal.inference.plan`) produces, besides the full mask for its first window, a known
region made of slabs of thickness ``overlap`` on one, two or three faces on distinct axes (a
window bordering refined voxels on several sides). :class:`MaskConfig` samples all of these.

Every mask here is described by a :class:`MaskShape`: the set of known face slabs
``(axis, side, thickness)`` (side 0 = low-index face, 1 = high-index face). A half mask is one
slab of thickness ``window // 2``; the full mask has none.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from realdeal.errors import ConfigError

Shape3 = tuple[int, int, int]
Slab = tuple[int, int, int]
"""``(axis, side, thickness)``: the known slab on a face (side 0 low, 1 high), in voxels."""


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Distribution of training masks.

    ``p_full``: full mask (nothing known; the paper's 10 %). ``p_half``: one of the six half
    masks (the paper's partial masks, and every mask of the official traversal). ``p_slabs``:
    known slabs on 1–3 faces on distinct axes, with ``faces`` the probabilities of 1, 2, 3
    faces, each face side uniform; the slabs share one thickness drawn uniformly from the
    integers in ``thickness`` × window side (a plan with overlap ``o`` produces known slabs of
    thickness ``o`` on all its faces; default range 1/8–1/2 of the window covers overlaps
    8…32 of a 64³ window and 4…16 of a 32³ one). The three probabilities must sum to 1.
    Defaults keep the paper's 10 % full masks and give 30 % to halves and 60 % to the slab
    shapes our plan produces. ``faces`` follows the default HCP plan, whose 140 non-first
    windows border refined voxels on 1/2/3 faces 13/55/72 times (``benchmarks/plan_counts.py``).
    """

    p_full: float = 0.1
    p_half: float = 0.3
    p_slabs: float = 0.6
    faces: tuple[float, float, float] = (0.15, 0.4, 0.45)
    thickness: tuple[float, float] = (0.125, 0.5)

    def __post_init__(self) -> None:
        ps = (self.p_full, self.p_half, self.p_slabs)
        if min(ps) < 0 or not math.isclose(sum(ps), 1.0, abs_tol=1e-6):
            raise ConfigError(f"p_full, p_half, p_slabs must be ≥ 0 and sum to 1, got {ps}")
        if len(self.faces) != 3 or min(self.faces) < 0 or sum(self.faces) <= 0:
            raise ConfigError(f"faces must be 3 non-negative weights, got {self.faces}")
        lo, hi = self.thickness
        if not 0 < lo <= hi <= 0.5:
            raise ConfigError(f"thickness must satisfy 0 < low ≤ high ≤ 0.5, got {self.thickness}")

    @classmethod
    def paper(cls) -> MaskConfig:
        """The paper's distribution: 10 % full, 90 % half masks."""
        return cls(p_full=0.1, p_half=0.9, p_slabs=0.0)

    def thickness_range(self, side: int) -> tuple[int, int]:
        """Integer slab thicknesses ``[low, high]`` (voxels) for a window side of ``side``."""
        lo = max(1, math.ceil(self.thickness[0] * side - 1e-9))
        hi = max(lo, math.floor(self.thickness[1] * side + 1e-9))
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclasses.dataclass(frozen=True, order=True)
class MaskShape:
    """A mask as the set of its known face slabs (sorted); empty = full mask."""

    known: tuple[Slab, ...] = ()

    def kind(self, window_shape: Sequence[int]) -> str:
        """``full``, ``half`` (one slab of half the window) or ``slabs``."""
        if not self.known:
            return "full"
        if len(self.known) == 1:
            ax, _, t = self.known[0]
            if t == int(window_shape[ax]) // 2:
                return "half"
        return "slabs"

    def to_mask(self, window_shape: Sequence[int]) -> np.ndarray:
        """The bool mask (True = generate) of this shape in a window of ``window_shape``."""
        m = np.ones(tuple(int(s) for s in window_shape), dtype=bool)
        for ax, side, t in self.known:
            sl = [slice(None)] * 3
            sl[ax] = slice(0, t) if side == 0 else slice(m.shape[ax] - t, m.shape[ax])
            m[tuple(sl)] = False
        return m

    def __str__(self) -> str:
        if not self.known:
            return "full"
        names = ("x", "y", "z")
        return "+".join(f"{names[a]}{'-' if s == 0 else '+'}{t}" for a, s, t in self.known)


def half_mask(window_shape: Sequence[int], axis: int, generate_high: bool) -> np.ndarray:
    """``M = 1`` on the high (``generate_high``) or low half of ``axis``; the other half known."""
    t = int(window_shape[axis]) // 2
    return MaskShape(((axis, 0 if generate_high else 1, t),)).to_mask(window_shape)


def sample_shape(
    window_shape: Sequence[int], rng: np.random.Generator, config: MaskConfig = MaskConfig()
) -> MaskShape:
    """Draw one :class:`MaskShape` from ``config`` (deterministic given ``rng``)."""
    ws = tuple(int(s) for s in window_shape)
    u = rng.random()
    if u < config.p_full:
        return MaskShape()
    if u < config.p_full + config.p_half:
        face = int(rng.integers(6))
        return MaskShape(((face // 2, face % 2, ws[face // 2] // 2),))
    f = np.asarray(config.faces, dtype=float)
    n_faces = int(rng.choice(3, p=f / f.sum())) + 1
    axes = sorted(int(a) for a in rng.choice(3, size=n_faces, replace=False))
    lo, hi = config.thickness_range(ws[0])
    t0 = int(rng.integers(lo, hi + 1))
    known = []
    for ax in axes:
        side = int(rng.integers(2))
        lo_a, hi_a = config.thickness_range(ws[ax])
        t = int(np.clip(round(t0 * ws[ax] / ws[0]), lo_a, hi_a))
        known.append((ax, side, t))
    return MaskShape(tuple(known))


def sample_mask(
    window_shape: Sequence[int], rng: np.random.Generator, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """One training mask, bool ``window_shape`` (True = to generate), drawn from ``config``."""
    return sample_shape(window_shape, rng, config).to_mask(window_shape)


def describe_mask(mask: np.ndarray) -> MaskShape | None:
    """The :class:`MaskShape` of a bool mask (True = generate), or None if the known region is
    not a union of face slabs (a shape neither the plan nor training produces)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ConfigError(f"expected a 3D mask, got shape {m.shape}")
    known = ~m
    slabs: list[Slab] = []
    for ax in range(3):
        full_planes = known.all(axis=tuple(a for a in range(3) if a != ax))
        for side in (0, 1):
            planes = full_planes if side == 0 else full_planes[::-1]
            t = int(np.argmin(planes)) if not planes.all() else planes.size
            if t:
                slabs.append((ax, side, t))
    shape = MaskShape(tuple(sorted(slabs)))
    return shape if np.array_equal(shape.to_mask(m.shape), m) else None


def in_support(
    shape: MaskShape | None, window_shape: Sequence[int], config: MaskConfig = MaskConfig()
) -> bool:
    """Whether :func:`sample_shape` can draw ``shape`` (exactly, sides included)."""
    if shape is None:
        return False
    ws = tuple(int(s) for s in window_shape)
    if not shape.known:
        return config.p_full > 0
    if config.p_half > 0 and shape.kind(ws) == "half":
        return True
    if config.p_slabs <= 0:
        return False
    axes = [a for a, _, _ in shape.known]
    n = len(axes)
    if len(set(axes)) != n or not 1 <= n <= 3 or config.faces[n - 1] <= 0:
        return False
    lo, hi = config.thickness_range(ws[0])
    for t0 in range(lo, hi + 1):  # the shared thickness that would produce every slab
        ok = True
        for ax, _, t in shape.known:
            lo_a, hi_a = config.thickness_range(ws[ax])
            if t != int(np.clip(round(t0 * ws[ax] / ws[0]), lo_a, hi_a)):
                ok = False
                break
        if ok:
            return True
    return False


def plan_mask_shapes(plan) -> Counter[MaskShape | None]:
    """How often each mask shape occurs among the diffused windows of a
    :class:`~realdeal.inference.plan.Plan` (``None`` counts masks that are not face slabs)."""
    return Counter(describe_mask(plan.generate_mask(w)) for w in plan.running)
