"""Import the authors' released checkpoints (SPEC §3–5) as realdeal checkpoints.

The authors released three ``torch.save`` files trained on full HCP:

``autoencoder_checkpoint.pth``  ``{"epoch", "model", "optimizer", "tot_loss"}``
``checkpoint750.pth`` (LDM)     ``{"epoch", "diffusion", "optimizer", "best_loss"}``
``checkpoint2690.pth`` (refiner) same keys as the LDM

``diffusion`` is the state dict of a ``torch.nn.DataParallel``-wrapped MONAI Generative 0.2.x
``DiffusionModelUNet``: keys start with ``module.`` and use that package's attention layout
(``X.to_q``, ``X.proj_attn``, upsampler ``conv``), which :func:`convert_unet_state` maps to
MONAI 1.x names exactly as ``DiffusionModelUNet.load_old_state_dict`` does, but strictly: every
key must be used and every parameter found. The refiner's norm layers carry the buffers of the
authors' running-statistics GroupNorm variant (``running_mean``, ``running_var``,
``num_batches_tracked``, one value per group); the authors ran inference in train mode, i.e.
with ordinary per-sample GroupNorm statistics, so the buffers are dropped.

The released autoencoder is its own network,
:class:`realdeal.models.official_autoencoder.OfficialAutoencoder` (submodule names as
released; its model config carries ``layout = "official"``).

Modules: :mod:`~realdeal.official.files` (reading the released files, telling them apart),
:mod:`~realdeal.official.convert` (state-dict mapping), :mod:`~realdeal.official.importer`
(writing realdeal checkpoints).

Tensors are ``(B, C, X, Y, Z)`` as everywhere in realdeal.
"""

from realdeal.models.official_autoencoder import (
    OfficialAutoencoder,
    OfficialAutoencoderConfig,
    is_official_autoencoder_config,
    official_autoencoder_from_state,
)
from realdeal.official.convert import (
    convert_autoencoder_state,
    convert_unet_state,
    infer_unet_config,
    old_unet_key,
)
from realdeal.official.files import (
    GROUPNORM_BUFFERS,
    KINDS,
    OFFICIAL_IMAGE_SHAPE,
    OFFICIAL_NORM_GROUPS,
    OFFICIAL_SPACING,
    OFFICIAL_WINDOW,
    PRESET,
    OfficialKind,
    detect_kind,
    read_official,
)
from realdeal.official.importer import (
    import_autoencoder,
    import_ldm,
    import_official,
    import_refiner,
)

__all__ = [
    "GROUPNORM_BUFFERS",
    "KINDS",
    "OFFICIAL_IMAGE_SHAPE",
    "OFFICIAL_NORM_GROUPS",
    "OFFICIAL_SPACING",
    "OFFICIAL_WINDOW",
    "PRESET",
    "OfficialAutoencoder",
    "OfficialAutoencoderConfig",
    "OfficialKind",
    "convert_autoencoder_state",
    "convert_unet_state",
    "detect_kind",
    "import_autoencoder",
    "import_ldm",
    "import_official",
    "import_refiner",
    "infer_unet_config",
    "is_official_autoencoder_config",
    "official_autoencoder_from_state",
    "old_unet_key",
    "read_official",
]
