"""Per-layer summary (layer, type, output shape, parameters), as the reference write-ups print with Keras/torchsummary.

The model is built on the ``meta`` device and run once with forward hooks on every leaf module (and on any module
that owns parameters directly): no memory, no init, milliseconds even for the 150M-parameter hybrid. Rows come in
the order the forward pass first calls each module; each row counts only the module's own parameters, each shared
parameter once, so the rows add up to ``count_params`` (the registry's figures in docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from senet_dist.models.registry import create_model


@dataclass(frozen=True)
class LayerRow:
    name: str  # dotted module path, e.g. "layer1.0.se.fc1"
    kind: str  # module class name
    output_shape: tuple[int, ...] | None  # of the first call; None when the forward pass never calls it
    params: int  # parameters the module owns directly (shared ones counted at their first row)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    num_classes: int
    image_size: int
    rows: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def layer_rows(model: nn.Module, image_size: int, in_chans: int = 3) -> list[LayerRow]:
    """Rows for ``model`` (on any device; ``meta`` allocates nothing) after one eval forward at ``image_size``."""
    listed = {
        name: module
        for name, module in model.named_modules()
        if name and (not any(True for _ in module.children()) or any(True for _ in module.parameters(recurse=False)))
    }
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if name not in shapes and tensor is not None:
                shapes[name] = tuple(tensor.shape)
                order.append(name)

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in listed.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, in_chans, image_size, image_size, device=device))
    finally:
        for h in handles:
            h.remove()
    seen: set[int] = set()
    rows = []
    for name in order + [n for n in listed if n not in shapes]:
        own = [p for p in listed[name].parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        rows.append(LayerRow(name, type(listed[name]).__name__, shapes.get(name), sum(p.numel() for p in own)))
    return rows


def summarize(name: str, num_classes: int = 1000, image_size: int | None = None, **kwargs: Any) -> ModelSummary:
    """The per-layer summary of a registered model built with ``kwargs`` (e.g. ``stem="cifar"``), on ``meta``."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    size = image_size or int(getattr(model, "default_image_size", 224))
    return ModelSummary(name, num_classes, size, layer_rows(model, size, int(kwargs.get("in_chans", 3))))


__all__ = ["LayerRow", "ModelSummary", "layer_rows", "summarize"]
