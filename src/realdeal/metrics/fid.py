"""Fréchet distance between Gaussian fits of feature sets, and FID's InceptionV3 features.

FD(μ1, Σ1, μ2, Σ2) = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½. The trace term is
computed from eigenvalues: Σ1^½ by a symmetric eigendecomposition (negative round-off
eigenvalues clipped to 0), then the eigenvalues of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½,
whose square roots sum to the trace — no ``scipy.linalg.sqrtm``, no complex round-off.

**FID** is this distance on pool3 features (2048-d) of pytorch-fid's InceptionV3 with its
TF-ported weights (``pt_inception-2015-12-05-6726825d.pth``), inputs resized bilinearly to
299×299 as pytorch-fid does. Here the inputs are 2D MRI patches in [-1, 1] repeated over three
channels. The paper reports FID ×1 (not ×100) on 64×64 patches per axis.
"""

from __future__ import annotations

import os

import numpy as np

from realdeal.errors import InstallationError
from realdeal.metrics import weights as W
from realdeal.runtime.environment import check_torchvision


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of ``(N, D)`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N ≥ 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    s = (np.asarray(sigma, dtype=np.float64) + np.asarray(sigma, dtype=np.float64).T) / 2
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    sqrt_sigma1: np.ndarray | None = None,
) -> float:
    """Fréchet distance of N(μ1, Σ1) and N(μ2, Σ2) by the eigenvalue method (module doc).

    ``sqrt_sigma1`` may pass a precomputed :func:`psd_sqrt` of Σ1 (reference set reused).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = psd_sqrt(s1) if sqrt_sigma1 is None else sqrt_sigma1
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    diff = mu1 - mu2
    # FD ≥ 0 exactly; round-off on (near-)singular covariances can dip a hair below.
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean), 0.0)


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits (unbiased covariances) of two ``(N, D)`` sets.

    When ``N1·N2 < D²`` (few samples, wide features) the trace term comes from the singular
    values of the ``N1 × N2`` matrix ``A1 A2ᵀ`` of centred features — the non-zero eigenvalues
    of Σ1^½ Σ2 Σ1^½ are its squared singular values / ((N1−1)(N2−1)) — instead of ``D × D``
    eigendecompositions; otherwise :func:`frechet_distance` is used.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) * len(b) >= a.shape[1] ** 2:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    a1, a2 = a - a.mean(0), b - b.mean(0)
    n1, n2 = len(a) - 1, len(b) - 1
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = a.mean(0) - b.mean(0)
    fd = diff @ diff + (a1 * a1).sum() / n1 + (a2 * a2).sum() / n2 - 2 * tr_covmean
    return max(float(fd), 0.0)


def build_fid_inception():
    """pytorch-fid's InceptionV3 graph with random weights (no download).

    A torchvision that does not work with the installed torch, or a missing ``pytorch-fid``
    package, is one :class:`~realdeal.errors.InstallationError` line naming the fix."""

    check_torchvision("FID (--features patchstats avoids it)")
    try:
        from pytorch_fid import inception as pfi
    except ImportError as e:
        raise InstallationError(
            f"FID needs the pytorch-fid package ({e}): pip install pytorch-fid, or pass "
            "--features patchstats"
        ) from e

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


class InceptionPool3:
    """Pool3 (2048-d) features of FID's InceptionV3 for ``(N, H, W)`` patches in [-1, 1]."""

    dim = 2048

    def __init__(self, net, device: str = "cpu"):
        import torch

        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        n = self.net
        self.blocks = torch.nn.Sequential(
            n.Conv2d_1a_3x3,
            n.Conv2d_2a_3x3,
            n.Conv2d_2b_3x3,
            torch.nn.MaxPool2d(3, 2),
            n.Conv2d_3b_1x1,
            n.Conv2d_4a_3x3,
            torch.nn.MaxPool2d(3, 2),
            n.Mixed_5b,
            n.Mixed_5c,
            n.Mixed_5d,
            n.Mixed_6a,
            n.Mixed_6b,
            n.Mixed_6c,
            n.Mixed_6d,
            n.Mixed_6e,
            n.Mixed_7a,
            n.Mixed_7b,
            n.Mixed_7c,
            torch.nn.AdaptiveAvgPool2d(1),
        )

    def __call__(self, patches: np.ndarray, batch_size: int = 50) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = []
        with torch.inference_mode():
            for i in range(0, len(patches), batch_size):
                x = torch.from_numpy(np.asarray(patches[i : i + batch_size], dtype=np.float32)).to(
                    self.device
                )
                x = x.clamp(-1, 1)[:, None].expand(-1, 3, -1, -1)
                # pytorch-fid: resize [0,1] input to 299 bilinearly, then scale to [-1,1]; same here.
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                out.append(self.blocks(x).flatten(1).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, self.dim))


def load_fid_inception(
    weights_dir: str | os.PathLike | None = None, allow_download: bool = True, device: str = "cpu"
) -> InceptionPool3:
    """FID's InceptionV3 with its real weights from the torch.hub cache (or ``weights_dir``)."""
    net = build_fid_inception()  # first: a broken torchvision is reported before the weights
    state = W.load_state_dict(W.FID_INCEPTION, weights_dir, allow_download)
    W.load_into(net, state, W.FID_INCEPTION, W.checkpoint_dir(weights_dir))
    return InceptionPool3(net, device)
