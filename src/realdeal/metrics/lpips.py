"""LPIPS (AlexNet, v0.1) between paired 2D patches (paper §3.2, Table 1).

The network is the ``lpips`` package's: AlexNet conv features from torchvision's ImageNet
checkpoint (``alexnet-owt-7be5be79.pth``, loaded from the torch.hub cache by
:mod:`realdeal.metrics.weights`) plus LPIPS's learned linear layers, which ship inside the
``lpips`` wheel (``lpips/weights/v0.1/alex.pth``). Patches in [-1, 1] (the range LPIPS expects)
are repeated over three channels.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from realdeal.errors import InstallationError
from realdeal.metrics import weights as W
from realdeal.runtime.environment import check_torchvision

# lpips splits AlexNet.features into five slices at these layer indices.
_SLICES = ((1, 0, 2), (2, 2, 5), (3, 5, 8), (4, 8, 10), (5, 10, 12))


def _alexnet_to_lpips_keys(state: dict) -> dict:
    """Map torchvision ``features.<i>.*`` keys to lpips ``net.slice<s>.<i>.*`` keys."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features":
            continue
        i = int(parts[1])
        s = next(s for s, lo, hi in _SLICES if lo <= i < hi)
        out[f"net.slice{s}.{i}.{'.'.join(parts[2:])}"] = value
    return out


class Lpips:
    """Callable LPIPS distance for batches of ``(N, H, W)`` patch pairs in [-1, 1]."""

    def __init__(self, model, device: str = "cpu"):
        import torch

        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def __call__(self, a: np.ndarray, b: np.ndarray, batch_size: int = 100) -> np.ndarray:
        """``(N,)`` LPIPS distances between ``a[i]`` and ``b[i]``."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(a), batch_size):
                x = torch.from_numpy(np.asarray(a[i : i + batch_size], np.float32))[:, None].expand(
                    -1, 3, -1, -1
                )
                y = torch.from_numpy(np.asarray(b[i : i + batch_size], np.float32))[:, None].expand(
                    -1, 3, -1, -1
                )
                d = self.model(x.to(self.device), y.to(self.device), normalize=False)
                out.append(d.flatten().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def load_lpips(
    weights_dir: str | os.PathLike | None = None, allow_download: bool = True, device: str = "cpu"
) -> Lpips:
    """LPIPS-AlexNet with the real ImageNet AlexNet weights (torch.hub cache or ``weights_dir``).

    A torchvision that does not work with the installed torch, or a missing ``lpips`` package,
    is one :class:`~realdeal.errors.InstallationError` line naming the fix."""

    check_torchvision("LPIPS (--no-lpips skips it)")
    try:
        import lpips as lpips_pkg
    except ImportError as e:
        raise InstallationError(
            f"LPIPS needs the lpips package ({e}): pip install lpips, or pass --no-lpips"
        ) from e
    import torchvision

    state = W.load_state_dict(W.ALEXNET, weights_dir, allow_download)
    folder = W.checkpoint_dir(weights_dir)
    W.load_into(
        torchvision.models.alexnet(weights=None), state, W.ALEXNET, folder
    )  # validates the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips passes the deprecated `pretrained=` to torchvision
        model = lpips_pkg.LPIPS(
            net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False
        )
    mapped = _alexnet_to_lpips_keys(state)
    result = model.load_state_dict(mapped, strict=False)
    not_loaded = [k for k in result.missing_keys if k.startswith("net.")]
    if result.unexpected_keys or not_loaded:
        bad = (result.unexpected_keys + not_loaded)[:3]
        raise W.MissingWeightsError(W.ALEXNET, folder, f"keys do not match LPIPS's AlexNet: {bad}")
    return Lpips(model, device)
