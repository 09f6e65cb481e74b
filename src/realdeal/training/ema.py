"""Exponential moving average of a model's weights, used for sampling and inference."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy ``θ_ema ← d·θ_ema + (1−d)·θ`` after every optimizer step.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so
    early averages are not dominated by the random initialisation. Buffers (BatchNorm
    running statistics) are copied, not averaged. ``state_dict()`` is a full model state
    dict that loads into a fresh model of the same architecture.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._param_names = [n for n, p in model.named_parameters() if p.requires_grad]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average the model's current weights into the shadow copy."""
        d = self.current_decay()
        params = dict(model.named_parameters())
        ema_p = [self.shadow[n] for n in self._param_names]
        cur_p = [params[n].detach() for n in self._param_names]
        if ema_p:
            torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)
        for n, b in model.named_buffers():
            if n in self.shadow:
                self.shadow[n].copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.num_updates = num_updates
