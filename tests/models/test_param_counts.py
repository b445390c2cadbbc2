"""Exact parameter counts of the reference networks (built on ``meta``: no memory, no init)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision

from senet_dist.models import create_model
from senet_dist.models.table import count_params


def _params(name: str, **kw: object) -> int:
    with torch.device("meta"):
        return count_params(create_model(name, **kw))


def _tv_params(fn: object, **kw: object) -> int:
    with torch.device("meta"):
        return count_params(fn(**kw))  # type: ignore[operator]


def _se_params(c: int, r: int, bias: bool = True) -> int:
    """A Linear-style SE: C -> C//r -> C, with or without biases."""
    h = c // r
    return 2 * c * h + ((h + c) if bias else 0)


def test_se_resnet50_cifar_stem_reference_count() -> None:
    assert _params("se_resnet50", num_classes=1000, stem="cifar") == 28_080_344


def test_se_resnet50_is_torchvision_layout_plus_se() -> None:
    stem_delta = 64 * 3 * (3 * 3 - 7 * 7)  # 3x3 instead of 7x7 stem conv
    se = sum(n * _se_params(c, 16) for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
    tv = _tv_params(torchvision.models.resnet50)
    assert _params("se_resnet50", stem="cifar") == tv + stem_delta + se
    assert _params("se_resnet50") == tv + se == 28_088_024  # paper/timm seresnet50: 28.09M


@pytest.mark.parametrize(
    ("name", "tv_fn", "blocks"),
    [
        ("se_resnet18", torchvision.models.resnet18, [(2, 64), (2, 128), (2, 256), (2, 512)]),
        ("se_resnet34", torchvision.models.resnet34, [(3, 64), (4, 128), (6, 256), (3, 512)]),
        ("se_resnet101", torchvision.models.resnet101, [(3, 256), (4, 512), (23, 1024), (3, 2048)]),
        ("se_resnet152", torchvision.models.resnet152, [(3, 256), (8, 512), (36, 1024), (3, 2048)]),
    ],
)
def test_se_resnets_match_torchvision_plus_se(name: str, tv_fn: object, blocks: list[tuple[int, int]]) -> None:
    se = sum(n * _se_params(c, 16) for n, c in blocks)
    assert _params(name, num_classes=10) == _tv_params(tv_fn, num_classes=10) + se


def test_se_densenet121_count() -> None:
    se = sum(_se_params(c, 16) for c in (256, 512, 1024, 1024))
    assert _params("se_densenet121") == _tv_params(torchvision.models.densenet121) + se == 8_284_952


def test_densenet121_se_head_count() -> None:
    se = _se_params(1024, 8, bias=False)
    assert (
        _params("densenet121_se_head", num_classes=3) == _tv_params(torchvision.models.densenet121, num_classes=3) + se
    )


def test_res_densenet_reference_count() -> None:
    assert _params("res_densenet", num_classes=2) == 149_871_874


def _res_densenet_formula(init: int, stem_k: int, stem_bias: bool, norms: tuple[bool, ...], conv_bias: bool) -> int:
    """Closed-form count of the hybrid for one candidate stem/BN/bias configuration (2 classes)."""
    stem_bn, layer_bn, trans_bn, final_bn = norms
    p = 3 * init * stem_k**2 + stem_bias * init + 2 * init * stem_bn
    c = init
    for i, n in enumerate((2, 4, 3, 2)):
        for _ in range(n):
            q = c // 4
            p += c * q + 9 * q * q + q * c + conv_bias * (2 * q + c) + layer_bn * (2 * c + 4 * q)
            c *= 2
        if i < 3:
            p += trans_bn * 2 * c + c * (c // 2) + conv_bias * (c // 2)
            c //= 2
    return p + final_bn * 2 * c + 2 * c + 2


def test_res_densenet_configuration_is_the_unique_match() -> None:
    """The search documented in docs/models.md: exactly one candidate hits the reference count."""
    hits = [
        (init, k, sb, norms, cb)
        for init in (16, 24, 32, 48, 64, 96, 128)
        for k in (3, 7)
        for sb in (False, True)
        for norms in itertools.product((False, True), repeat=4)
        for cb in (False, True)
        if _res_densenet_formula(init, k, sb, norms, cb) == 149_871_874
    ]
    assert hits == [(64, 7, False, (True, True, True, True), False)]
    assert _res_densenet_formula(*hits[0]) == _params("res_densenet", num_classes=2)


def test_se_resnet_cifar_defaults_are_the_reference_model() -> None:
    """128 filters, 9 blocks, SE r=16 without conv biases (the gate keeps its learned x*w+b): 2,708,106."""
    assert _params("se_resnet_cifar", num_classes=10) == 2_708_106
    explicit = {"filters": 128, "blocks": 9, "se_reduction": 16, "se_bias": False}
    assert _params("se_resnet_cifar", num_classes=10, **explicit) == 2_708_106
    # the former default (r=8, SE with biases): per block 128->16 (+16) and 16->256 (+256) more
    assert _params("se_resnet_cifar", num_classes=10, se_reduction=8, se_bias=True) == 2_738_202
    se_old, se_new = 128 * 16 + 16 + 16 * 256 + 256, 128 * 8 + 8 * 256
    assert 2_738_202 - 2_708_106 == 9 * (se_old - se_new)
