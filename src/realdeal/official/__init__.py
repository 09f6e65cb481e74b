"""Import the authors' released checkpoints (docs/method.md#spec-3 to #spec-5) as realdeal checkpoints.

The authors released three ``torch.save`` files trained on full HCP:

``autoencoder_checkpoint.pth``  ``{"epoch", "model", "optimizer", "tot_loss"}``
``checkpoint750.pth`` (LDM)     ``{"epoch", "diffusion", "optimizer", "best_loss"}``
``checkpoint2690.pth`` (refiner) same keys as the LDM

NumPy values in these files (the autoencoder's ``tot_loss`` is a NumPy number) are read with
an allowlist of exactly the NumPy globals numbers need, still with ``weights_only=True``
(:func:`~realdeal.official.files.read_official`), and stored as Python numbers.

``diffusion`` is the state dict of a ``torch.nn.DataParallel``-wrapped MONAI Generative 0.2.x
``DiffusionModelUNet``: keys start with ``module.`` and use that package's attention layout
(``X.to_q``, ``X.proj_attn``, upsampler ``conv``). :func:`convert_unet_state` maps it onto a
MONAI 1.x ``DiffusionModelUNet`` built with ``include_fc=False`` (no output projection after
self-attention): MONAI Generative 0.2.x's ``AttentionBlock`` creates ``proj_attn`` but never
applies it, so those weights are checked to be present and dropped. (MONAI's own
``DiffusionModelUNet.load_old_state_dict`` loads them into the projection of a default
``include_fc=True`` network, which then computes something the released one never did.) The
mapping is strict: every other key must be used and every parameter found. The number of
attention heads does not show in the weights; the released configs use one head per level,
and a different ``num_head_channels`` can be given (several heads convert exactly,
:func:`~realdeal.official.convert.head_channels`). The refiner's norm layers carry the
buffers of the authors' running-statistics GroupNorm variant (``running_mean``,
``running_var``, ``num_batches_tracked``, one value per group); the authors ran inference in
train mode, i.e. with ordinary per-sample GroupNorm statistics, so the buffers are dropped.

The released autoencoder is its own network,
:class:`realdeal.models.official_autoencoder.OfficialAutoencoder` (submodule names as
released; its model config carries ``layout = "official"``).

An import never writes over its input: an output that is the released file (or the LDM's
autoencoder file) is refused before anything is read, and outputs are written under a
temporary name and renamed into place.

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
    head_channels,
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
    numpy_loss_globals,
    read_official,
)
from realdeal.official.importer import (
    import_autoencoder,
    import_ldm,
    import_official,
    import_refiner,
    refuse_overwrite,
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
    "head_channels",
    "import_autoencoder",
    "import_ldm",
    "import_official",
    "import_refiner",
    "infer_unet_config",
    "is_official_autoencoder_config",
    "numpy_loss_globals",
    "official_autoencoder_from_state",
    "old_unet_key",
    "read_official",
    "refuse_overwrite",
]
