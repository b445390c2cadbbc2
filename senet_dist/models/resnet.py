"""SE-ResNet (Hu et al., 2018): SE on the residual branch, before the identity addition.

Layout follows torchvision's ResNet v1.5 (stride on the 3x3 conv of the bottleneck). Two stems:
``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, the paper's) and ``"cifar"`` (3x3/1 conv, no pool).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet_dist.models.parts import ClassifierHead, check_common, init_weights
from senet_dist.models.registry import register_model
from senet_dist.models.se import SqueezeExcite

STEMS = ("imagenet", "cifar")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity when shapes match, else the torchvision 1x1-conv + BN projection."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(cin, cout, 1, stride))


class SEBasicBlock(nn.Module):
    """3x3 -> 3x3 residual block with SE on the branch."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, se_reduction: int = 16) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride)
        self.act = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(planes, cout, 3)
        self.se = SqueezeExcite(cout, se_reduction)
        self.shortcut = _shortcut(cin, cout, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        out += self.shortcut(x)
        return self.act(out)


class SEBottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4) bottleneck with SE on the branch."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, se_reduction: int = 16) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, cout, 1)
        self.act = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(cout, se_reduction)
        self.shortcut = _shortcut(cin, cout, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        out += self.shortcut(x)
        return self.act(out)


def _stem(kind: str, in_chans: int, width: int) -> nn.Sequential:
    if kind not in STEMS:
        raise ValueError(f"unknown stem {kind!r}; expected one of {STEMS}")
    if kind == "cifar":
        return nn.Sequential(*_conv_bn(in_chans, width, 3), nn.ReLU(inplace=True))
    return nn.Sequential(*_conv_bn(in_chans, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))


class SEResNet(nn.Module):
    """Four stages of widths ``width * (1, 2, 4, 8)``; ``width=64`` is the reference network."""

    def __init__(
        self,
        block: type[SEBasicBlock] | type[SEBottleneck],
        layers: tuple[int, ...],
        num_classes: int = 1000,
        *,
        in_chans: int = 3,
        stem: str = "imagenet",
        width: int = 64,
        se_reduction: int = 16,
        drop_rate: float = 0.0,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        if width < 1 or len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"need width >= 1 and 4 stages of >= 1 block, got width={width}, layers={layers}")
        self.default_image_size = 32 if stem == "cifar" else 224
        self.stem = _stem(stem, in_chans, width)
        stages, cin = [], width
        for i, depth in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, planes, stride if j == 0 else 1, se_reduction))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate)
        init_weights(self)
        if zero_init_last:  # each block starts as identity (timm's default; ours is off, like torchvision)
            for m in self.modules():
                if isinstance(m, (SEBasicBlock, SEBottleneck)):
                    nn.init.zeros_(m.last_norm().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _build(block: Any, layers: tuple[int, ...], num_classes: int, kw: dict[str, Any]) -> SEResNet:
    """Resolve the ``base_width`` alias of ``width`` (timm/torchvision spell it differently)."""
    if "base_width" in kw:
        base = kw.pop("base_width")
        if "width" in kw and kw["width"] != base:
            raise ValueError(f"width={kw['width']} and base_width={base} disagree; pass one")
        kw["width"] = base
    return SEResNet(block, layers, num_classes, **kw)


@register_model
def se_resnet_tiny(num_classes: int = 1000, **kw: Any) -> SEResNet:
    """One BasicBlock per stage at width 16, CIFAR stem: a seconds-to-train model for tests/demos."""
    kw.setdefault("stem", "cifar")
    if "base_width" not in kw:
        kw.setdefault("width", 16)
    kw.setdefault("se_reduction", 4)
    return _build(SEBasicBlock, (1, 1, 1, 1), num_classes, kw)


@register_model
def se_resnet18(num_classes: int = 1000, **kw: Any) -> SEResNet:
    return _build(SEBasicBlock, (2, 2, 2, 2), num_classes, kw)


@register_model
def se_resnet34(num_classes: int = 1000, **kw: Any) -> SEResNet:
    return _build(SEBasicBlock, (3, 4, 6, 3), num_classes, kw)


@register_model
def se_resnet50(num_classes: int = 1000, **kw: Any) -> SEResNet:
    return _build(SEBottleneck, (3, 4, 6, 3), num_classes, kw)


@register_model
def se_resnet101(num_classes: int = 1000, **kw: Any) -> SEResNet:
    return _build(SEBottleneck, (3, 4, 23, 3), num_classes, kw)


@register_model
def se_resnet152(num_classes: int = 1000, **kw: Any) -> SEResNet:
    return _build(SEBottleneck, (3, 8, 36, 3), num_classes, kw)
