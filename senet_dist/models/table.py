"""Parameter and FLOP table for ``senet-dist models``.

Models are built on the ``meta`` device: no memory is allocated and no init runs on real data, so
even the 150M-parameter hybrid costs milliseconds. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (it counts a multiply-add as 2 FLOPs, i.e. 2x the
"MACs" many papers quote as FLOPs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from senet_dist.models.registry import check_model_name, create_model, list_models


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; all of ours are trainable)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int | tuple[int, int], batch: int = 1) -> int:
    """Forward FLOPs of one ``batch`` at ``image_size`` on the model's own device (meta works)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    device = next(model.parameters()).device
    x = torch.empty(batch, 3, h, w, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    return counter.get_total_flops()


def model_row(name: str, image_size: int | None = None, num_classes: int = 1000, **kwargs: Any) -> dict:
    """``{name, params, image_size, gflops}`` for one registered model built with ``kwargs``, on ``meta``."""
    check_model_name(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    default: int = getattr(model, "default_image_size", 224)
    size = image_size or default
    flops = count_flops(model, size)
    return {"name": name, "params": count_params(model), "image_size": size, "gflops": round(flops / 1e9, 3)}


def model_table(
    names: Iterable[str] | None = None, image_size: int | None = None, num_classes: int = 1000, **kwargs: Any
) -> list[dict]:
    """One row per model (all registered by default); GFLOPs at 224 px, or 32 px for CIFAR nets."""
    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    names = list_models() if names is None else list(names)
    return [model_row(n, image_size, num_classes, **kwargs) for n in names]
