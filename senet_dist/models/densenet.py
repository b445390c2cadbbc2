"""DenseNet-121 (Huang et al., 2017) with SE, two ways.

* ``se_densenet121``: an SE layer (r=16, with bias) after every dense block, before the transition.
* ``densenet121_se_head``: one SE (r=8, no bias) on the final ReLU'd features before pooling. The
  reference computed this SE and then pooled the *un-reweighted* map; here the SE output is what the
  classifier sees.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet_dist.models.parts import ClassifierHead, check_common, init_weights
from senet_dist.models.registry import register_model
from senet_dist.models.se import SqueezeExcite


def bn_relu_conv(cin: int, cout: int, k: int, bias: bool = False) -> list[nn.Module]:
    """Pre-activation unit: BN -> ReLU -> conv (padding keeps the spatial size)."""
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, 1, k // 2, bias=bias)]


class DenseLayer(nn.Sequential):
    """BN-ReLU-1x1 (bn_size * growth) -> BN-ReLU-3x3 (growth); returns only the new features."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__(*bn_relu_conv(cin, bn_size * growth, 1), *bn_relu_conv(bn_size * growth, growth, 3))


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def __init__(self, cin: int, num_layers: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = cin + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compress channels) -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int, bias: bool = False) -> None:
        super().__init__(*bn_relu_conv(cin, cout, 1, bias), nn.AvgPool2d(2, 2))


def imagenet_stem(in_chans: int, cout: int) -> nn.Sequential:
    """7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool (DenseNet/ResNet ImageNet stem)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, cout, 7, 2, 3, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


class SEDenseNet(nn.Module):
    """DenseNet-BC; ``block_se``/``head_se`` are SE reductions (``None`` = no SE there)."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        block_se: int | None = 16,
        head_se: int | None = None,
        head_se_bias: bool = False,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        if not 0.0 < compression <= 1.0 or not block_config or min(block_config) < 1:
            raise ValueError(f"need 0 < compression <= 1 and blocks >= 1, got {compression}, {block_config}")
        self.default_image_size = 224
        self.stem = imagenet_stem(in_chans, num_init_features)
        stages: list[nn.Module] = []
        c = num_init_features
        for i, n in enumerate(block_config):
            block = DenseBlock(c, n, growth_rate, bn_size)
            stages.append(block)
            c = block.out_channels
            if block_se is not None:
                stages.append(SqueezeExcite(c, block_se))
            if i < len(block_config) - 1:
                stages.append(Transition(c, int(c * compression)))
                c = int(c * compression)
        self.features = nn.Sequential(*stages, nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.head_se = SqueezeExcite(c, head_se, bias=head_se_bias) if head_se is not None else nn.Identity()
        self.num_features = c
        self.head = ClassifierHead(c, num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_se(self.features(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model
def se_densenet121(num_classes: int = 1000, **kw: Any) -> SEDenseNet:
    """DenseNet-121 + SE (r=16, Linear-equivalent with bias) after each of the 4 dense blocks."""
    kw.setdefault("block_se", 16)
    return SEDenseNet(num_classes, **kw)


@register_model
def densenet121_se_head(num_classes: int = 1000, **kw: Any) -> SEDenseNet:
    """DenseNet-121 + one bias-free SE (r=8) on the final features, which feed the classifier."""
    kw.setdefault("block_se", None)
    kw.setdefault("head_se", 8)
    return SEDenseNet(num_classes, **kw)
