"""Recipes: one file per reference write-up, under ``configs/recipes/``, each a (partial) ``PipelineConfig``.

A recipe carries what the write-up fixes and nothing about where data or results live: ``variants`` (the models it
trains), ``train`` (a ``TrainConfig``: optimizer, schedule, augmentation, EMA, ...), optionally ``model_kwargs`` (per
variant) and ``shard`` (a ``ShardConfig``: split fractions and seed, image storage). So the same file drives

* ``senet-dist run --config RECIPE --data IMAGEFOLDER`` (shard with the recipe's ``shard`` section, then train and
  evaluate every variant: the whole write-up from one config),
* ``senet-dist train --config RECIPE --model VARIANT --data SHARDS`` (only its ``train`` section, for that variant),
* ``train_senet(**recipe_params(path), data=...)`` from Python or a Prefect deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from senet_dist.errors import ConfigError
from senet_dist.pipeline.config import PipelineConfig
from senet_dist.train.config import TrainConfig

RECIPES_DIR = Path(__file__).resolve().parents[2] / "configs" / "recipes"
RECIPE_KEYS = ("variants", "train", "model_kwargs", "shard")  # what a recipe may set (the rest is per machine)


def list_recipes(directory: str | Path = RECIPES_DIR) -> list[Path]:
    """The recipe files in ``directory`` (sorted)."""
    return sorted(p for p in Path(directory).glob("*.yaml") if p.is_file())


def _mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def is_recipe(path: str | Path) -> bool:
    """Whether ``path`` is a recipe/pipeline file (it has a ``train`` section) rather than a bare TrainConfig."""
    return isinstance(_mapping(path).get("train"), dict)


def load_recipe(path: str | Path) -> PipelineConfig:
    """Parse and check a recipe: only ``RECIPE_KEYS``, ``variants`` and ``train`` present, every name registered."""
    data = _mapping(path)
    extra = sorted(set(data) - set(RECIPE_KEYS))
    if extra:
        raise ConfigError(f"{path}: a recipe sets only {', '.join(RECIPE_KEYS)}; remove {', '.join(extra)}")
    missing = [k for k in ("variants", "train") if k not in data]
    if missing:
        raise ConfigError(f"{path}: a recipe must set {' and '.join(missing)}")
    cfg = PipelineConfig.from_file(path)
    for name in cfg.variants:
        cfg.train_config(name).validate()
    return cfg


def recipe_params(path: str | Path) -> dict[str, Any]:
    """The recipe as ``train_senet`` keyword arguments (its sections, validated)."""
    load_recipe(path)
    return {k: v for k, v in _mapping(path).items() if k in RECIPE_KEYS}


def train_config_from_file(path: str | Path, model: str | None = None) -> TrainConfig:
    """A TrainConfig file as is; a recipe's ``train`` section for ``model`` (with its per-variant kwargs).

    Without ``model`` a recipe must train exactly one variant."""
    if not is_recipe(path):
        return TrainConfig.from_file(path)
    cfg = load_recipe(path)
    if model is None:
        if len(cfg.variants) != 1:
            raise ConfigError(f"{path} trains {', '.join(cfg.variants)}: choose one with --model")
        model = cfg.variants[0]
    return cfg.train_config(model)


__all__ = [
    "RECIPES_DIR",
    "RECIPE_KEYS",
    "is_recipe",
    "list_recipes",
    "load_recipe",
    "recipe_params",
    "train_config_from_file",
]
