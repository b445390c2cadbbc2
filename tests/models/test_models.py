"""Behaviour every registered model must have (parametrised over ``list_models()`` like timm's tests).

Full-size models are built once per module (cached) and run at 32 px, so the whole file stays well
under a minute on two cores; shape checks for other class counts run on the ``meta`` device.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from senet_dist.models import create_model, list_models
from senet_dist.models.se import SqueezeExcite

NUM_CLASSES = 5
NAMES = list_models()
# Narrower builds of the heaviest models for the tests that build extra copies or run backward;
# the full-size models still run forward at two sizes. The hybrid's reference has no SE: add one.
LIGHT_KW: dict[str, dict] = {
    "res_densenet": {"num_init_features": 16, "se_reduction": 16},
    "se_resnet101": {"width": 16},
    "se_resnet152": {"width": 16},
}


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES).eval()


@functools.cache
def _light_model(name: str) -> nn.Module:
    if name not in LIGHT_KW:
        return _model(name)
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, **LIGHT_KW[name]).eval()


def _se_modules(model: nn.Module) -> list[SqueezeExcite]:
    return [m for m in model.modules() if isinstance(m, SqueezeExcite)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(32, 32), (37, 50)])
def test_forward_shape(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        out = _model(name)(torch.randn(2, 3, *size))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [1, 3, 1000])
def test_any_num_classes_on_meta(name: str, num_classes: int) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes).eval()
        out = model(torch.empty(2, 3, 64, 40))
    assert out.shape == (2, num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = copy.deepcopy(_light_model(name)).train()
    torch.manual_seed(2)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    for se in _se_modules(model):  # the SE path is in the graph
        assert se.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_se_changes_logits(name: str) -> None:
    model = _light_model(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(x)
        ablated = copy.deepcopy(model)
        ses = _se_modules(ablated)
        assert ses, f"{name} has no SE block"
        for se in ses:  # gate -> sigmoid(0) = 0.5 everywhere (and zero extra bias)
            se.fc2.weight.zero_()
            if se.fc2.bias is not None:
                se.fc2.bias.zero_()
        after = ablated(x)
    assert not torch.allclose(before, after, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name: str) -> None:
    kw = LIGHT_KW.get(name, {})
    torch.manual_seed(0)
    again = create_model(name, num_classes=NUM_CLASSES, **kw).eval()
    first = _light_model(name).state_dict()
    assert again.state_dict().keys() == first.keys()
    for key, value in again.state_dict().items():
        assert torch.equal(value, first[key]), key
    torch.manual_seed(1)
    other = create_model(name, num_classes=NUM_CLASSES, **kw)
    conv = next(m for m in other.modules() if isinstance(m, nn.Conv2d))
    first_conv = next(m for m in _light_model(name).modules() if isinstance(m, nn.Conv2d))
    assert not torch.equal(conv.weight, first_conv.weight)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model(x)
        out = copy.deepcopy(model).to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    # Different conv kernels sum in a different order; in eval mode at init, logits can be large.
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
