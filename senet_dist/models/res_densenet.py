"""``res_densenet``: the ResNet-style DenseNet hybrid.

Every dense layer is a pre-activation ResNet bottleneck, BN-ReLU-1x1 (C/4) -> BN-ReLU-3x3 (C/4) ->
BN-ReLU-1x1 (back to C), and its output is *concatenated* with its input, so channels double per
layer. Blocks (2, 4, 3, 2) with compression-0.5 transitions, 64 init channels after the DenseNet
7x7 stem, and a final BN-ReLU. The reference's stem and init width were not stated; this is the one
configuration of those searched (docs/models.md) that reproduces its 149,871,874 params at
2 classes. The reference has no SE, so neither has the default; ``se_reduction=16`` adds an SE on each
layer's bottleneck output (before the concatenation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet_dist.models.densenet import Transition, bn_relu_conv, imagenet_stem
from senet_dist.models.parts import ClassifierHead, check_common, init_weights
from senet_dist.models.registry import register_model
from senet_dist.models.se import SqueezeExcite


class ResDenseLayer(nn.Module):
    """``cat([x, se(bottleneck(x))])``: C in, 2C out."""

    def __init__(self, c: int, se_reduction: int | None) -> None:
        super().__init__()
        if c % 4:
            raise ValueError(f"res_densenet layer width must be divisible by 4, got {c}")
        q = c // 4
        self.branch = nn.Sequential(*bn_relu_conv(c, q, 1), *bn_relu_conv(q, q, 3), *bn_relu_conv(q, c, 1))
        self.se = SqueezeExcite(c, se_reduction) if se_reduction else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.se(self.branch(x))], 1)


class ResDenseNet(nn.Module):
    """Stem -> [block of doubling layers -> transition] x 4 -> BN-ReLU -> pooled classifier."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        block_config: tuple[int, ...] = (2, 4, 3, 2),
        num_init_features: int = 64,
        compression: float = 0.5,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        if not block_config or min(block_config) < 1 or not 0.0 < compression <= 1.0:
            raise ValueError(f"need blocks >= 1 and 0 < compression <= 1, got {block_config}, {compression}")
        self.default_image_size = 224
        self.stem = imagenet_stem(in_chans, num_init_features)
        stages: list[nn.Module] = []
        c = num_init_features
        for i, n in enumerate(block_config):
            for _ in range(n):
                stages.append(ResDenseLayer(c, se_reduction))
                c *= 2
            if i < len(block_config) - 1:
                stages.append(Transition(c, int(c * compression)))
                c = int(c * compression)
        self.features = nn.Sequential(*stages, nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.num_features = c
        self.head = ClassifierHead(c, num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model
def res_densenet(num_classes: int = 1000, **kw: Any) -> ResDenseNet:
    """ResNet-bottleneck DenseNet hybrid (the reference, no SE); ``se_reduction=16`` adds SE per layer."""
    return ResDenseNet(num_classes, **kw)
