"""Every shipped recipe (senet_dist/recipes/): it loads, validates, builds each of its models and trains one tiny
step on CPU with its own loader options (real lfw-subset shards), optimizer, mixup and EMA. No Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from senet_dist import recipes
from senet_dist.data import DatasetInfo, make_loader
from senet_dist.errors import ConfigError
from senet_dist.models.table import count_params
from senet_dist.pipeline.recipes import (
    RECIPE_KEYS,
    load_recipe,
    recipe_names,
    recipe_params,
    train_config_from_file,
)
from senet_dist.train.components import build_components
from senet_dist.train.loops import train_epoch
from senet_dist.train.mixup import mixup_for_epoch

RECIPES = recipe_names()
CASES = [(name, variant) for name in RECIPES for variant in load_recipe(name).variants]
# what a one-step CPU smoke run changes; everything else is the recipe's
SMOKE = {
    "image_size": 32,
    "batch_size": 2,
    "num_workers": 1,
    "loader.num_workers": 0,
    "use_gpu": False,
    "precision": "auto",
    "compile": False,
}


def test_the_reference_recipes_exist() -> None:
    names = set(RECIPES)
    assert {
        "se_densenet121_monkeypox",
        "se_resnet18_to_152_cifar_stem_224px",
        "res_densenet_two_class",
        "densenet121_se_head_80_20",
        "se_resnet_cifar_cifar10",
        "fashion_mnist_cpu_full",
    } <= names


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_says_what_it_follows_and_how_it_differs(name: str) -> None:
    text = recipes.text(name)
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert text.startswith("# Recipe:") and "Run" in header
    assert "differ" in header or "NOT YET MEASURED" in header
    assert set(yaml.safe_load(text)) <= set(RECIPE_KEYS)


@pytest.mark.parametrize(("path", "variant"), CASES)
def test_recipe_trains_one_step_on_cpu(path: str, variant: str, lfw_shards_factory) -> None:
    version = lfw_shards_factory(None)  # real 2-class images through the recipe's own augmentation
    info = DatasetInfo.load(version)
    recipe = load_recipe(path)
    cfg = recipe.train_config(variant).validate(version)
    assert cfg == train_config_from_file(path, variant)  # what `senet-dist train --config` would use
    smoke = cfg.with_overrides(SMOKE)
    torch.manual_seed(0)
    comp = build_components(smoke, info.num_classes, torch.device("cpu"), steps_per_epoch=1)
    assert comp.num_params == count_params(comp.core) > 0
    assert (comp.ema is not None) == cfg.ema.enabled
    loader = make_loader(version, "train", smoke.loader_config(), epoch=1)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 32, 32)
    before = [p.detach().clone() for p in comp.core.parameters()]
    mix = mixup_for_epoch(cfg.mixup, info.num_classes, 1, seed=cfg.seed, rank=0)
    comp.opts.max_steps = 1
    sums = train_epoch(
        comp.model, [(images, labels)], comp.criterion, comp.optimizer, comp.scheduler, comp.opts, mix=mix, ema=comp.ema
    )
    assert sums.steps == 1 and math.isfinite(sums.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, comp.core.parameters(), strict=True))


def test_reference_details_are_what_the_write_ups_say() -> None:
    by_name = {name: name for name in RECIPES}
    cifar = load_recipe(by_name["se_resnet_cifar_cifar10"]).train_config("se_resnet_cifar")
    assert cifar.optimizer.name == "sgd" and cifar.optimizer.weight_decay_scope == "all"
    assert (cifar.optimizer.lr, cifar.optimizer.weight_decay, cifar.optimizer.nesterov) == (0.1, 1e-4, True)
    assert (cifar.epochs, cifar.batch_size, cifar.schedule.name) == (40, 128, "none")
    assert (cifar.loader.augment, cifar.loader.pad, cifar.loader.hflip) == ("pad_crop", 4, True)
    with torch.device("meta"):
        from senet_dist.models import create_model

        assert count_params(create_model("se_resnet_cifar", num_classes=10, **cifar.model_kwargs)) == 2_708_106
    head = load_recipe(by_name["densenet121_se_head_80_20"])
    t = head.train_config("densenet121_se_head")
    assert (t.optimizer.name, t.optimizer.lr, t.epochs, t.batch_size) == ("adam", 1e-4, 20, 32)
    assert (t.loader.augment, t.loader.hflip, t.image_size) == ("resize", False, 224)
    assert head.shard.fractions == (0.8, 0.2, 0.0) and head.shard.seed == 428
    hybrid = load_recipe(by_name["res_densenet_two_class"]).train_config("res_densenet")
    got = (hybrid.optimizer.name, hybrid.optimizer.lr, hybrid.schedule.name, hybrid.epochs)
    assert got == ("adam", 1e-4, "none", 20)
    depths = load_recipe(by_name["se_resnet18_to_152_cifar_stem_224px"])
    assert depths.variants == [f"se_resnet{d}" for d in (18, 34, 50, 101, 152)]
    assert all(depths.train_config(v).model_kwargs == {"stem": "cifar"} for v in depths.variants)


def test_recipe_params_feed_the_flow_and_bad_recipes_are_one_line_errors(tmp_path: Path) -> None:
    from senet_dist.pipeline import PipelineConfig

    params = recipe_params("densenet121_se_head_80_20")
    cfg = PipelineConfig.parse({**params, "data": "lfw-subset"})
    assert cfg.variants == ["densenet121_se_head"] and cfg.shard.fractions == (0.8, 0.2, 0.0)
    bad = tmp_path / "bad.yaml"
    for text, needle in (
        ("variants: [se_resnet18]\ntrain: {epochs: 1}\ndata: /x\n", "a recipe sets only"),
        ("train: {epochs: 1}\n", "must set variants"),
        ("variants: [se_resnet18]\ntrain: {optimizer: lamb}\n", "optimizer.name must be one of"),
        ("variants: [se_resnet404]\ntrain: {}\n", "unknown model"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_recipe(bad)
    many = "se_resnet18_to_152_cifar_stem_224px"
    with pytest.raises(ConfigError, match="choose one with --model"):
        train_config_from_file(many)
    assert train_config_from_file(many, "se_resnet50").model == "se_resnet50"


def test_a_recipe_is_found_by_name_or_by_file_and_anything_else_lists_the_names(tmp_path: Path) -> None:
    by_name = load_recipe("densenet121_se_head_80_20")
    (tmp_path / "mine.yaml").write_text(recipes.text("densenet121_se_head_80_20"))
    assert load_recipe(tmp_path / "mine.yaml") == by_name == load_recipe("densenet121_se_head_80_20.yaml")
    with pytest.raises(ConfigError, match="neither a file nor a recipe name; recipes: densenet121_se_head_80_20"):
        load_recipe("densenet_from_mars")
