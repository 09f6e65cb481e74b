"""Pretrained-weight files for the deep metrics (LPIPS's AlexNet, FID's InceptionV3).

The files live where torchvision, lpips and pytorch-fid keep them: the torch.hub cache,
``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), so an online user gets
them on first use and shares them with those packages. ``weights_dir`` points elsewhere
(``realdeal evaluate --weights-dir``). Files are read with ``torch.load(weights_only=True)``.
When a file is missing and cannot be downloaded, :class:`MissingWeightsError` says which file,
where to put it and where to get it — in one line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from realdeal.errors import RealDealError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """A pretrained checkpoint known by file name, download URL and SHA-256 prefix."""

    name: str
    url: str
    hash_prefix: str | None
    used_for: str


ALEXNET = WeightFile(
    name="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    hash_prefix="7be5be79",
    used_for="LPIPS (AlexNet features, torchvision)",
)
FID_INCEPTION = WeightFile(
    name="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
    hash_prefix="6726825d",
    used_for="FID (InceptionV3 of pytorch-fid / TF-slim)",
)


class MissingWeightsError(RealDealError):
    """A pretrained-weight file is absent (or unreadable) and could not be downloaded."""

    def __init__(self, weight: WeightFile, folder: Path, reason: str = "not found"):
        self.weight = weight
        self.folder = Path(folder)
        super().__init__(
            f"{weight.used_for} needs {weight.name} in {self.folder} ({reason}); "
            f"download it from {weight.url} into that folder, or pass --weights-dir FOLDER"
        )


def checkpoint_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """Folder searched for weight files: ``weights_dir`` or the torch.hub checkpoint cache."""
    if weights_dir is not None:
        return Path(weights_dir)
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_path(
    weight: WeightFile,
    weights_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> Path:
    """Path of ``weight`` in the cache, downloading it first if allowed and missing.

    A failed download (offline machine, bad hash) becomes :class:`MissingWeightsError`.
    """
    folder = checkpoint_dir(weights_dir)
    path = folder / weight.name
    if path.is_file():
        return path
    if not allow_download:
        raise MissingWeightsError(weight, folder)
    import torch

    log.info("downloading %s to %s", weight.url, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weight.url, str(path), hash_prefix=None, progress=False)
    except Exception as e:  # URLError, HTTPError, OSError, RuntimeError (hash): all mean "not here"
        path.unlink(missing_ok=True)
        raise MissingWeightsError(
            weight, folder, f"not found; download failed: {type(e).__name__}"
        ) from e
    return path


def load_state_dict(
    weight: WeightFile,
    weights_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> dict:
    """Load ``weight``'s state dict on the CPU with ``weights_only=True``."""
    import torch

    path = weight_path(weight, weights_dir, allow_download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MissingWeightsError(weight, path.parent, f"unreadable: {type(e).__name__}") from e
    if not isinstance(state, dict):
        raise MissingWeightsError(weight, path.parent, "not a state dict")
    return state


def load_into(module, state: dict, weight: WeightFile, folder: Path) -> None:
    """``module.load_state_dict(state)`` (strict), with a wrong file reported as the weight's error."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise MissingWeightsError(weight, folder, f"keys or shapes do not match: {first}") from e
