"""The refiner's masked conditioning, built the same way for training and inference.

The paper's conditioning (paper §2.2, Figure 2; docs/method.md#spec-5).

For a window with generate mask ``M`` (1 = generate, 0 = known) and known values ``k``
(training: the original patch; inference: the refined values so far):

* ``y_prev = k·(1−M) + g·M`` with ``g ~ N(0, I)``: the known region, noise elsewhere;
* ``x_t`` is noisy only where ``M = 1``; the known region stays clean (``k``) at every step;
* the network sees ``[x_t, x̂, y_prev]`` on the channel axis: :func:`condition` gives
  ``[x̂, y_prev]``, which :class:`~realdeal.diffusion.denoiser.Denoiser` appends to ``x_t``.

All tensors are ``(B, 1, D, H, W)``; ``M`` is float (0/1) in the data's dtype.
Used by :mod:`realdeal.training.refiner` (the loss) and :mod:`realdeal.inference.refine`.
"""

from __future__ import annotations

import torch


def keep_known(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` = 1, the clean ``known`` values elsewhere."""
    return x * mask + known * (1 - mask)


def y_prev(known: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The previous-output channel: ``known`` where ``mask`` = 0, ``noise`` where it is 1."""
    return known * (1 - mask) + noise * mask


def condition(xhat: torch.Tensor, y_prev: torch.Tensor) -> torch.Tensor:
    """The conditioning channels ``[x̂, y_prev]`` (the network's input is ``[x_t, x̂, y_prev]``)."""
    return torch.cat([xhat, y_prev], dim=1)


def training_inputs(
    x: torch.Tensor,
    xhat: torch.Tensor,
    mask: torch.Tensor,
    g: torch.Tensor,
    x_noised: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, cond)`` for a training sample: ``x`` the clean target, ``g`` the noise of
    ``y_prev`` and ``x_noised`` = ``add_noise(x, ε, t)``."""
    return keep_known(x_noised, x, mask), condition(xhat, y_prev(x, g, mask))


def start_inputs(
    known: torch.Tensor,
    xhat: torch.Tensor,
    mask: torch.Tensor,
    g: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_T, cond)`` that start a reverse chain: pure ``noise`` where ``mask`` = 1, or with
    ``alpha_bar`` = ᾱ_{t₀} (a partial chain, ``--strength``) the known values noised to t₀."""
    if alpha_bar is not None:
        noise = alpha_bar**0.5 * known + (1 - alpha_bar) ** 0.5 * noise
    return keep_known(noise, known, mask), condition(xhat, y_prev(known, g, mask))
