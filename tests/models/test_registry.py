"""Registry and model-table behaviour."""

from __future__ import annotations

import pytest
import torch

from senet_dist.models import (
    UnknownModelError,
    check_model_name,
    create_model,
    list_models,
    model_table,
    register_model,
)


def test_list_models_has_every_variant() -> None:
    names = list_models()
    assert names == sorted(names)
    for expected in ("se_resnet_tiny", "se_resnet18", "se_resnet50", "se_resnet152"):
        assert expected in names


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("se_resnet_nope")
    message = str(info.value)
    assert "se_resnet_nope" in message
    assert all(name in message for name in list_models())
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownModelError):
        check_model_name("")


def test_duplicate_registration_rejected() -> None:
    def se_resnet_tiny(num_classes: int = 1000) -> torch.nn.Module:
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(se_resnet_tiny)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_num_classes(bad: int) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_model("se_resnet_tiny", num_classes=bad)


def test_bad_kwargs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="stem"):
        create_model("se_resnet18", stem="mnist")
    with pytest.raises(ValueError, match="disagree"):
        create_model("se_resnet18", width=32, base_width=16)
    with pytest.raises(TypeError):
        create_model("se_resnet_tiny", not_a_kwarg=1)


def test_model_table_rows() -> None:
    rows = model_table(["se_resnet_tiny", "se_resnet50"])
    assert [r["name"] for r in rows] == ["se_resnet_tiny", "se_resnet50"]
    tiny, r50 = rows
    assert tiny["image_size"] == 32 and r50["image_size"] == 224
    assert r50["params"] == 28_088_024  # SE-ResNet-50, ImageNet stem, 1000 classes (paper: 28.09M)
    assert 7.5 < r50["gflops"] < 9.0  # ~3.9 GMACs (paper) = ~8 GFLOPs counted as 2 per MAC
    assert 0 < tiny["gflops"] < 0.1
    bigger = model_table(["se_resnet_tiny"], image_size=64)[0]
    assert bigger["gflops"] == pytest.approx(4 * tiny["gflops"], rel=0.05)
    with pytest.raises(UnknownModelError):
        model_table(["nope"])
    with pytest.raises(ValueError, match="image_size"):
        model_table(image_size=8)
