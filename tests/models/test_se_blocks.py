"""The SE block itself and the two reference bugs our variants fix."""

from __future__ import annotations

import pytest
import torch

from senet_dist.models import create_model
from senet_dist.models.se import SqueezeExcite, SqueezeExciteBias, se_hidden


def test_gate_is_a_sigmoid_of_the_squeezed_input() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=4)
    x = torch.randn(3, 32, 7, 5)
    gate = se.gate(x)
    assert gate.shape == (3, 32, 1, 1)
    assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(se(x), x * gate)
    manual = torch.sigmoid(
        se.fc2.weight[:, :, 0, 0] @ torch.relu(se.fc1.weight[:, :, 0, 0] @ x.mean((2, 3)).T + se.fc1.bias[:, None])
        + se.fc2.bias[:, None]
    )
    torch.testing.assert_close(gate[:, :, 0, 0], manual.T)


def test_se_backward_and_channels_last() -> None:
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    se(x).sum().backward()
    assert x.grad is not None and se.fc1.weight.grad is not None
    xc = x.detach().to(memory_format=torch.channels_last)
    torch.testing.assert_close(se(xc), se(x.detach()))


def test_hidden_width_rules() -> None:
    assert se_hidden(2048, 16) == 128
    assert se_hidden(8, 16) == 1
    with pytest.raises(ValueError):
        se_hidden(0, 16)


def test_gate_and_bias_constant_over_space() -> None:
    """Per (sample, channel) the output is an affine map of the input shared by every pixel.

    The reference's per-pixel gate ``x * sigmoid(conv(x)) + conv(x)`` is non-linear in each pixel's
    value, so a least-squares line through (x, y) over all pixels would leave a residual.
    """
    torch.manual_seed(0)
    se = SqueezeExciteBias(8, reduction=2)
    x = torch.randn(2, 8, 6, 9)
    with torch.no_grad():
        y = se(x)
        g, b = se.gate_and_bias(x)
    assert g.shape == b.shape == (2, 8, 1, 1)
    torch.testing.assert_close(y, x * g + b)
    xs, ys = x.flatten(2), y.flatten(2)  # (N, C, HW)
    design = torch.stack([xs, torch.ones_like(xs)], -1)  # fit y = a * x + c per (n, c)
    fit = torch.linalg.lstsq(design, ys.unsqueeze(-1)).solution
    residual = (design @ fit).squeeze(-1) - ys
    assert residual.abs().max() < 1e-4
    torch.testing.assert_close(fit[..., 0, 0], g[..., 0, 0], rtol=1e-4, atol=1e-4)


def test_gate_depends_on_the_whole_map() -> None:
    """Changing one pixel moves the output at *other* pixels (global squeeze, not a per-pixel gate)."""
    torch.manual_seed(1)
    se = SqueezeExciteBias(8, reduction=2)
    x = torch.randn(1, 8, 5, 5)
    x2 = x.clone()
    x2[..., 0, 0] += 5.0
    with torch.no_grad():
        diff = (se(x2) - se(x))[..., 1:, 1:]
    assert diff.abs().max() > 1e-4


def test_se_resnet_cifar_uses_gate_and_bias_blocks() -> None:
    model = create_model("se_resnet_cifar", num_classes=10)
    ses = [m for m in model.modules() if isinstance(m, SqueezeExciteBias)]
    assert len(ses) == 9
    assert all(se.fc2.out_channels == 2 * 128 for se in ses)
    small = create_model("se_resnet_cifar", num_classes=10, filters=16, blocks=2)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_densenet_head_se_feeds_the_classifier() -> None:
    """Reference bug: the head SE was computed and then ignored. Perturbing it must move the logits."""
    torch.manual_seed(0)
    model = create_model("densenet121_se_head", num_classes=4, growth_rate=8, num_init_features=16).eval()
    assert model.head_se.fc1.bias is None and model.head_se.fc1.out_channels == model.num_features // 8
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        features = model.features(model.stem(x))
        expected = model.head(model.head_se(features))
        torch.testing.assert_close(before, expected)
        assert not torch.allclose(before, model.head(features))  # pooling un-reweighted maps differs
        model.head_se.fc2.weight.mul_(-3.0)
        assert not torch.allclose(before, model(x))
