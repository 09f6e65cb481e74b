"""Precision, recall, density and coverage (Naeem et al. 2020) for several k at once.

Same definitions as the ``prdc`` package (Euclidean distances; a point's radius is the
distance to its k-th nearest neighbour in its own set, itself excluded):

- precision = share of fake points inside some real point's ball;
- recall    = share of real points inside some fake point's ball;
- density   = (1 / kM) Σ_fake #{real balls containing it};
- coverage  = share of real points whose nearest fake point lies inside their ball.

Distances are computed in row blocks (torch, float64), so 20,000 × 20,000 feature sets never
materialise a full distance matrix, and one pass serves every k.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (5, 10, 20)


def _blocks(n: int, block: int):
    for i in range(0, n, block):
        yield slice(i, min(i + block, n))


def knn_radii(
    features: np.ndarray, ks: tuple[int, ...], block: int = 2048
) -> dict[int, np.ndarray]:
    """Distance of each row to its k-th nearest other row, for each k (``{k: (N,)}``)."""
    import torch

    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    kmax = max(ks)
    if kmax >= len(x):
        raise ValueError(f"k = {kmax} needs more than {kmax} points, got {len(x)}")
    out = {k: np.empty(len(x)) for k in ks}
    for sl in _blocks(len(x), block):
        d = torch.cdist(x[sl], x)
        # k+1 smallest: the first is the point itself (distance 0), as in prdc.
        vals = torch.topk(d, kmax + 1, dim=1, largest=False).values.numpy()
        for k in ks:
            out[k][sl] = vals[:, k]
    return out


def prdc_multi(
    real: np.ndarray,
    fake: np.ndarray,
    ks: tuple[int, ...] = DEFAULT_KS,
    block: int = 2048,
    real_radii: dict[int, np.ndarray] | None = None,
) -> dict[int, dict[str, float]]:
    """``{k: {"precision", "recall", "density", "coverage"}}`` of ``fake`` vs ``real`` features.

    ``real_radii``: ``knn_radii(real, ks)`` computed once by a caller that compares many fake
    sets (bootstrap draws) with the same real set — the real set's k-NN is the costly part.
    """
    import torch

    real_r = real_radii if real_radii is not None else knn_radii(real, ks, block)
    fake_r = knn_radii(fake, ks, block)
    xr = torch.as_tensor(np.asarray(real, dtype=np.float64))
    xf = torch.as_tensor(np.asarray(fake, dtype=np.float64))
    rr = {k: torch.as_tensor(v) for k, v in real_r.items()}
    fr = {k: torch.as_tensor(v) for k, v in fake_r.items()}
    n_real, n_fake = len(xr), len(xf)
    hits_per_fake = {k: torch.zeros(n_fake, dtype=torch.float64) for k in ks}  # density counts
    fake_in_real = {k: torch.zeros(n_fake, dtype=torch.bool) for k in ks}  # precision
    real_in_fake = {k: torch.zeros(n_real, dtype=torch.bool) for k in ks}  # recall
    nearest_fake = torch.full((n_real,), float("inf"), dtype=torch.float64)  # coverage
    for sl in _blocks(n_real, block):
        d = torch.cdist(xr[sl], xf)  # (b, M)
        nearest_fake[sl] = d.min(dim=1).values
        for k in ks:
            inside = d < rr[k][sl, None]
            hits_per_fake[k] += inside.sum(dim=0)
            fake_in_real[k] |= inside.any(dim=0)
            real_in_fake[k][sl] = (d < fr[k][None, :]).any(dim=1)
    return {
        k: {
            "precision": float(fake_in_real[k].double().mean()),
            "recall": float(real_in_fake[k].double().mean()),
            "density": float(hits_per_fake[k].sum() / (k * n_fake)),
            "coverage": float((nearest_fake < rr[k]).double().mean()),
        }
        for k in ks
    }
