"""One registry for every model variant, in the style of timm's ``@register_model``.

Variants register a factory ``fn(num_classes=..., **kw) -> nn.Module``; callers only ever use
:func:`create_model` so that the CLI, the trainer and the tests all see the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from senet_dist.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(ConfigError):
    """Raised for a model name that is not registered; the message lists the valid names."""


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register ``fn`` under its function name. Duplicate names are a programming error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _load_variants()
    return sorted(_REGISTRY)


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` (listing valid names) unless ``name`` is registered."""
    _load_variants()
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")


def create_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("se_resnet50", num_classes=10, stem="imagenet")``."""
    check_model_name(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


_NOT_VARIANTS = frozenset({"parts", "registry", "se", "summary", "table"})


def _load_variants() -> None:
    """Import every module of the models package so their ``@register_model`` decorators run: adding a model is
    one decorated function, in an existing module or a new one, with no list of modules to keep in step."""
    import importlib
    import pkgutil

    import senet_dist.models as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in _NOT_VARIANTS:
            importlib.import_module(f"{package.__name__}.{module.name}")
