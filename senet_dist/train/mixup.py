"""Mixup and CutMix on a training batch, with mixed (soft) targets: timm's ``Mixup`` in its default ``batch`` mode.

Each batch is paired with its own reverse (sample ``i`` with ``n-1-i``), so no second batch is needed. Mixup blends
whole images, ``lam * x + (1 - lam) * x.flip(0)``; CutMix pastes a box of the reversed batch whose area is
``1 - lam`` of the image, clipped at the borders, and ``lam`` is then corrected to the area actually kept. The
targets are the same blend of one-hot labels, so they sum to 1 per sample; ``nn.CrossEntropyLoss`` takes such
probability targets directly (and applies ``label_smoothing`` to them exactly as timm's ``mixup_target`` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from senet_dist.train.config import MixupConfig


@dataclass(frozen=True)
class MixParams:
    """One batch's draw: ``lam`` is the weight of the original batch; ``box`` = (top, bottom, left, right)."""

    lam: float = 1.0
    cutmix: bool = False
    box: tuple[int, int, int, int] | None = None


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], float]:
    """A box of about ``(1 - lam)`` of the image centred uniformly at random, clipped; and the corrected ``lam``."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = min(max(cy - cut_h // 2, 0), h), min(max(cy + cut_h // 2, 0), h)
    left, right = min(max(cx - cut_w // 2, 0), w), min(max(cx + cut_w // 2, 0), w)
    return (top, bottom, left, right), 1.0 - (bottom - top) * (right - left) / float(h * w)


class Mixup:
    """Callable ``(images, labels) -> (mixed images, soft targets)``; draws come from ``rng`` only (seedable)."""

    def __init__(self, cfg: MixupConfig, num_classes: int, rng: np.random.Generator) -> None:
        if not cfg.enabled:
            raise ValueError("mixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.cfg, self.num_classes, self.rng = cfg, num_classes, rng

    def draw(self, h: int, w: int) -> MixParams:
        c, rng = self.cfg, self.rng
        if rng.random() >= c.prob:
            return MixParams()
        if c.mixup_alpha > 0 and c.cutmix_alpha > 0:
            cutmix = bool(rng.random() < c.switch_prob)
        else:
            cutmix = c.cutmix_alpha > 0
        alpha = c.cutmix_alpha if cutmix else c.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not cutmix:
            return MixParams(lam)
        box, lam = cutmix_box(h, w, lam, rng)
        return MixParams(lam, True, box)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.draw(*images.shape[-2:])
        if p.cutmix and p.box is not None:
            top, bottom, left, right = p.box
            images = images.clone()
            images[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
        elif p.lam != 1.0:
            images = images * p.lam + images.flip(0) * (1.0 - p.lam)
        return images, mix_targets(labels, self.num_classes, p.lam)


def mix_targets(labels: torch.Tensor, num_classes: int, lam: float) -> torch.Tensor:
    """``lam * onehot(y) + (1 - lam) * onehot(y reversed)`` as float32 (N, num_classes)."""
    one_hot = F.one_hot(labels, num_classes).float()
    return one_hot * lam + one_hot.flip(0) * (1.0 - lam)


def mixup_for_epoch(cfg: MixupConfig, num_classes: int, epoch: int, *, seed: int, rank: int) -> Mixup | None:
    """This epoch's mixer (None when mixing is off or over); seeded by (seed, rank, epoch), so a resumed run
    draws what the interrupted one would have."""
    if not cfg.active(epoch):
        return None
    return Mixup(cfg, num_classes, np.random.default_rng([seed, rank, epoch]))


__all__ = ["MixParams", "Mixup", "cutmix_box", "mix_targets", "mixup_for_epoch"]
