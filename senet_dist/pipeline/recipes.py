"""Recipes: one file per reference write-up, shipped with the package (``senet_dist/recipes/*.yaml``), each a
(partial) ``PipelineConfig``.

A recipe carries what the write-up fixes and nothing about where data or results live: ``variants`` (the models it
trains), ``train`` (a ``TrainConfig``: optimizer, schedule, augmentation, EMA, ...), optionally ``model_kwargs`` (per
variant) and ``shard`` (a ``ShardConfig``: split fractions and seed, image storage). So the same recipe drives

* ``senet-dist run --config RECIPE --data IMAGEFOLDER`` (shard with the recipe's ``shard`` section, then train and
  evaluate every variant: the whole write-up from one config),
* ``senet-dist train --config RECIPE --model VARIANT --data SHARDS`` (only its ``train`` section, for that variant),
* ``train_senet(**recipe_params(RECIPE), data=...)`` from Python or a Prefect deployment.

``RECIPE`` is a recipe's name (``se_densenet121_monkeypox``: one of :func:`recipe_names`, shipped in
``senet_dist.recipes`` so an installed wheel has them too) or the path of a YAML file of one's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from senet_dist import recipes
from senet_dist.errors import ConfigError
from senet_dist.pipeline.config import PipelineConfig
from senet_dist.schema import Section
from senet_dist.train.config import TrainConfig

T = TypeVar("T", bound=Section)

RECIPE_KEYS = ("variants", "train", "model_kwargs", "shard")  # what a recipe may set (the rest is per machine)


def recipe_names() -> list[str]:
    """The recipes shipped with the package, by name (sorted)."""
    return recipes.names()


def recipe_text(recipe: str | Path) -> tuple[str, str]:
    """``(where, YAML text)`` of a recipe name or a config file's path; a name that is neither lists the names."""
    p = Path(recipe).expanduser()
    if p.is_file():
        return str(p), p.read_text()
    name = str(recipe).removesuffix(recipes.SUFFIX)
    if name in recipes.names():
        return f"recipe {name}", recipes.text(name)
    raise ConfigError(
        f"config {str(recipe)!r} is neither a file nor a recipe name; recipes: {', '.join(recipe_names())}"
    )


def _mapping(recipe: str | Path) -> tuple[str, dict[str, Any]]:
    where, text = recipe_text(recipe)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {where}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    return where, data


def _parse(section: type[T], data: dict[str, Any], where: str) -> T:
    try:
        return section.parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def is_recipe(recipe: str | Path) -> bool:
    """Whether ``recipe`` is a recipe/pipeline config (it has a ``train`` section) rather than a bare TrainConfig."""
    return isinstance(_mapping(recipe)[1].get("train"), dict)


def load_recipe(recipe: str | Path) -> PipelineConfig:
    """Parse and check a recipe: only ``RECIPE_KEYS``, ``variants`` and ``train`` present, every name registered."""
    where, data = _mapping(recipe)
    extra = sorted(set(data) - set(RECIPE_KEYS))
    if extra:
        raise ConfigError(f"{where}: a recipe sets only {', '.join(RECIPE_KEYS)}; remove {', '.join(extra)}")
    missing = [k for k in ("variants", "train") if k not in data]
    if missing:
        raise ConfigError(f"{where}: a recipe must set {' and '.join(missing)}")
    cfg = _parse(PipelineConfig, data, where)
    for name in cfg.variants:
        cfg.train_config(name).validate()
    return cfg


def recipe_params(recipe: str | Path) -> dict[str, Any]:
    """The recipe as ``train_senet`` keyword arguments (its sections, validated)."""
    load_recipe(recipe)
    return {k: v for k, v in _mapping(recipe)[1].items() if k in RECIPE_KEYS}


def train_config_from_file(recipe: str | Path, model: str | None = None) -> TrainConfig:
    """A TrainConfig file as is; a recipe's ``train`` section for ``model`` (with its per-variant kwargs).

    Without ``model`` a recipe must train exactly one variant."""
    if not is_recipe(recipe):
        where, data = _mapping(recipe)
        return _parse(TrainConfig, data, where)
    cfg = load_recipe(recipe)
    if model is None:
        if len(cfg.variants) != 1:
            raise ConfigError(f"{recipe} trains {', '.join(cfg.variants)}: choose one with --model")
        model = cfg.variants[0]
    return cfg.train_config(model)


__all__ = [
    "RECIPE_KEYS",
    "is_recipe",
    "load_recipe",
    "recipe_names",
    "recipe_params",
    "recipe_text",
    "train_config_from_file",
]
