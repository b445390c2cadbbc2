"""Exponential moving average of a model's weights, after timm's ``ModelEmaV3``.

Every floating-point entry of the state dict (parameters and BN running statistics) is lerped toward the model
after each optimizer step; integer buffers (BN's ``num_batches_tracked``) are copied. The first update copies the
model (decay 0), and with warm-up the decay then grows as ``1 - (1 + t)^-power`` up to ``decay``, so the average
is not anchored to the random init in short runs. The copy lives on the model's device and is never trained.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from senet_dist.train.config import EmaConfig


def ema_decay(step: int, cfg: EmaConfig) -> float:
    """Decay for the ``step``-th update (1-based): 0 for the first, then warm-up (if on) capped at ``cfg.decay``."""
    t = step - 1
    if t <= 0:
        return 0.0
    if not cfg.warmup:
        return cfg.decay
    return max(min(1.0 - (1.0 + t) ** -cfg.warmup_power, cfg.decay), 0.0)


class ModelEma:
    """``update()`` after each optimizer step; ``module`` is the averaged copy to evaluate or save.

    ``source`` is the unwrapped model being trained (not its DDP wrapper: the state-dict keys must match).
    """

    def __init__(self, source: nn.Module, cfg: EmaConfig) -> None:
        self.cfg, self.source = cfg, source
        self.module = copy.deepcopy(source).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self) -> float:
        """Move the average toward the source's current weights; returns the decay used."""
        self.updates += 1
        decay = ema_decay(self.updates, self.cfg)
        ema_float, model_float = [], []
        for e, m in zip(self.module.state_dict().values(), self.source.state_dict().values(), strict=True):
            if e.is_floating_point():
                ema_float.append(e)
                model_float.append(m.detach())
            else:
                e.copy_(m)
        if ema_float:
            torch._foreach_lerp_(ema_float, model_float, 1.0 - decay)
        return decay

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


__all__ = ["ModelEma", "ema_decay"]
