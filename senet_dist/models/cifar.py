"""``se_resnet_cifar``: the small constant-width CIFAR network with a gate-and-bias SE.

3x3 stem conv to 128 filters, 9 residual blocks of two 3x3 convs, each block's branch ending in an
SE whose excitation emits ``2C`` channels, split into a gate ``w`` and a bias ``b``
(``x * sigmoid(w) + b``), then a 1x1 conv to 128, global pool and a linear classifier. The reference
applied the excitation convs to the un-pooled map (a per-pixel gate); here the squeeze comes first,
so gate and bias are constant over space, as SE intends.

Defaults are the reference model exactly: 128 filters, 9 blocks, SE reduction 16 and no biases in the SE's
1x1 convs (the learned ``b`` of ``x * sigmoid(w) + b`` is an excitation output, not a conv bias):
2,708,106 parameters at 10 classes (``tests/models/test_param_counts.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet_dist.models.parts import ClassifierHead, check_common, init_weights
from senet_dist.models.registry import register_model
from senet_dist.models.se import SqueezeExciteBias


def conv_bn_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class GateBiasBlock(nn.Module):
    """conv-BN-ReLU-conv-BN -> SE(gate, bias) -> + identity -> ReLU; width stays ``c``."""

    def __init__(self, c: int, se_reduction: int, se_bias: bool = False) -> None:
        super().__init__()
        self.branch = nn.Sequential(*conv_bn_relu(c, c, 3), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.se = SqueezeExciteBias(c, se_reduction, bias=se_bias)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.branch(x)) + x)


class SEResNetCifar(nn.Module):
    """Stem -> ``blocks`` x :class:`GateBiasBlock` -> 1x1 conv -> pooled linear head."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        filters: int = 128,
        blocks: int = 9,
        se_reduction: int = 16,
        se_bias: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        if filters < 1 or blocks < 1:
            raise ValueError(f"filters and blocks must be >= 1, got {filters}, {blocks}")
        self.default_image_size = 32
        self.stem = nn.Sequential(*conv_bn_relu(in_chans, filters, 3))
        self.blocks = nn.Sequential(*(GateBiasBlock(filters, se_reduction, se_bias) for _ in range(blocks)))
        self.neck = nn.Sequential(*conv_bn_relu(filters, filters, 1))
        self.num_features = filters
        self.head = ClassifierHead(filters, num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model
def se_resnet_cifar(num_classes: int = 1000, **kw: Any) -> SEResNetCifar:
    """128-filter, 9-block CIFAR SE-ResNet with gate-and-bias excitation (SE r=16, no conv biases in the SE)."""
    return SEResNetCifar(num_classes, **kw)
