"""Optimizer and per-step LR schedule factories.

The schedule is a pure function of the global step (``lr_factor``) wrapped in ``LambdaLR``: it is easy to test,
and stepping per batch makes warmup smooth even when an epoch is only a handful of steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from senet_dist.train.config import ScheduleConfig, TrainConfig


def param_groups(model: nn.Module, weight_decay: float, scope: str = "weights") -> list[dict]:
    """``weights``: decay conv/linear weights only (decaying BN scales and biases hurts accuracy for no
    regularisation gain); ``all``: one group, every parameter decayed (what a reference recipe may prescribe)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if scope == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    if scope != "weights":
        raise ValueError(f"unknown weight decay scope {scope!r}")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    groups = param_groups(model, o.weight_decay, o.weight_decay_scope)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=o.betas)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    raise ValueError(f"unknown optimizer {o.name!r}")


def warmup_steps(s: ScheduleConfig, steps_per_epoch: int) -> int:
    return s.warmup_steps if s.warmup_steps > 0 else round(s.warmup_epochs * steps_per_epoch)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, s: ScheduleConfig) -> float:
    """Multiplier of the peak lr at global ``step`` (0-based): linear warmup, then the named decay."""
    warm = min(warmup_steps(s, steps_per_epoch), max(total_steps - 1, 0))
    if step < warm:
        return (step + 1) / (warm + 1)
    if s.name == "none":
        return 1.0
    if s.name == "step":
        return s.gamma ** (step // (s.step_epochs * steps_per_epoch))
    if s.name == "cosine":
        span = max(total_steps - warm, 1)
        t = min((step - warm) / span, 1.0)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {s.name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, cfg.schedule)
    )
