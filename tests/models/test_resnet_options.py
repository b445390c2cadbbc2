"""Constructor options shared by the variants: stems, width alias, zero_init_last, drop_rate, in_chans."""

from __future__ import annotations

import pytest
import torch

from senet_dist.models import create_model
from senet_dist.models.resnet import SEBasicBlock, SEBottleneck
from senet_dist.models.table import count_params


@pytest.mark.parametrize(("stem", "side"), [("cifar", 4), ("imagenet", 1)])
def test_stem_sets_the_feature_resolution(stem: str, side: int) -> None:
    model = create_model("se_resnet_tiny", stem=stem).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 128, side, side)
    assert model.default_image_size == (32 if stem == "cifar" else 224)


def test_width_and_base_width_are_aliases() -> None:
    a = create_model("se_resnet50", num_classes=3, width=8)
    b = create_model("se_resnet50", num_classes=3, base_width=8)
    assert a.num_features == b.num_features == 8 * 8 * 4
    assert count_params(a) == count_params(b)


def test_zero_init_last_makes_blocks_start_as_identity_branches() -> None:
    torch.manual_seed(0)
    model = create_model("se_resnet18", num_classes=3, width=8, zero_init_last=True)
    blocks = [m for m in model.modules() if isinstance(m, (SEBasicBlock, SEBottleneck))]
    assert blocks and all(float(b.last_norm().weight.detach().abs().sum()) == 0 for b in blocks)
    block = blocks[0].eval()  # identity shortcut: output = relu(x) when the branch is zeroed
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))
    default = create_model("se_resnet18", num_classes=3, width=8)
    assert all(
        float(m.last_norm().weight.detach().abs().sum()) > 0 for m in default.modules() if isinstance(m, SEBasicBlock)
    )


@pytest.mark.parametrize("name", ["se_resnet_tiny", "se_resnet_cifar"])
def test_drop_rate_is_active_only_in_training(name: str) -> None:
    kw = {"filters": 16, "blocks": 1} if name == "se_resnet_cifar" else {}
    model = create_model(name, num_classes=4, drop_rate=0.5, **kw)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(1)
        assert not torch.allclose(first, model(x))
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, drop_rate=1.0)


@pytest.mark.parametrize("name", ["se_resnet_tiny", "se_densenet121", "res_densenet", "se_resnet_cifar"])
def test_in_chans(name: str) -> None:
    kw = {
        "se_densenet121": {"growth_rate": 4, "num_init_features": 8},
        "res_densenet": {"num_init_features": 4},
        "se_resnet_cifar": {"filters": 8, "blocks": 1},
    }.get(name, {})
    model = create_model(name, num_classes=2, in_chans=1, **kw).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2)
    with pytest.raises(ValueError, match="in_chans"):
        create_model(name, in_chans=0)
