"""The ``senet-dist`` console script: help everywhere, clear one-line errors (exit 2), real commands on tiny data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from senet_dist.cli import app

runner = CliRunner()
COMMANDS = [
    [],
    ["models"],
    ["datasets"],
    ["datasets", "list"],
    ["datasets", "fetch"],
    ["shard"],
    ["train"],
    ["evaluate"],
    ["report"],
    ["run"],
    ["config"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_datasets_list_and_fetch_help_come_from_the_registry():
    from senet_dist.data import dataset_specs

    listed = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    for spec in dataset_specs():
        assert spec.name in listed.output and spec.licence in listed.output
    helped = runner.invoke(app, ["datasets", "fetch", "--help"], env={"COLUMNS": "200"})
    assert all(spec.name in helped.output for spec in dataset_specs())


def test_models_table_and_unknown_model():
    result = runner.invoke(app, ["models", "se_resnet_tiny", "se_resnet50"])
    assert result.exit_code == 0, result.output
    assert "se_resnet_tiny" in result.output and "28,088,024" in result.output
    bad = runner.invoke(app, ["models", "se_resnet9000"])
    assert bad.exit_code == 2
    assert "unknown model" in bad.output and "se_resnet18" in bad.output and "Traceback" not in bad.output


def test_shard_fetch_and_report_roundtrip(tmp_path):
    src = tmp_path / "lfw"
    assert runner.invoke(app, ["datasets", "fetch", "lfw-subset", str(src), "--limit-per-class", "10"]).exit_code == 0
    first = runner.invoke(app, ["shard", str(src), str(tmp_path / "shards"), "--max-count", "5", "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "new version" in first.output
    again = runner.invoke(app, ["shard", str(src), str(tmp_path / "shards"), "--max-count", "5", "--no-progress"])
    assert again.exit_code == 0 and "unchanged" in again.output
    empty = runner.invoke(app, ["report", "--artifacts", str(tmp_path / "artifacts")])
    assert empty.exit_code == 0
    eighty_twenty = ["shard", str(src), str(tmp_path / "s8020"), "--val", "0.2", "--test", "0", "--no-progress"]
    split = runner.invoke(app, eighty_twenty)  # an 80/20 train/val split is one pair of flags
    assert split.exit_code == 0 and "'train': 16, 'val': 4, 'test': 0" in split.output, split.output


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    missing = runner.invoke(app, ["shard", str(tmp_path / "nope"), str(tmp_path / "out"), "--no-progress"])
    assert missing.exit_code == 2 and "error:" in missing.output and "Traceback" not in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["shard", str(tmp_path / "empty"), str(tmp_path / "out"), "--no-progress"])
    assert empty.exit_code == 2 and "error:" in empty.output
    unknown = runner.invoke(app, ["datasets", "fetch", "imagenet", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "lfw-subset" in unknown.output
    no_data = runner.invoke(app, ["train", "--model", "se_resnet_tiny", "--data", str(tmp_path)])
    assert no_data.exit_code == 2 and "dataset.json" in no_data.output and "Traceback" not in no_data.output
    bad_set = runner.invoke(app, ["train", "--model", "se_resnet_tiny", "--data", str(tmp_path), "--set", "epochs"])
    assert bad_set.exit_code == 2 and "key=value" in bad_set.output


def test_run_offers_concurrent_and_sequential_variants():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "--concurrent" in result.output and "--sequential" in result.output


def test_config_prints_the_schema_defaults_with_overrides():
    import yaml

    from senet_dist.pipeline import PipelineConfig

    result = runner.invoke(app, ["config", "--set", "train.epochs=3", "--set", "shard.max_count=32"])
    assert result.exit_code == 0, result.output
    shown = PipelineConfig.parse(yaml.safe_load(result.output))
    assert shown == PipelineConfig().with_overrides({"train.epochs": 3, "shard.max_count": 32})
    bad = runner.invoke(app, ["config", "--set", "train.epoch=3"])
    assert bad.exit_code == 2 and "unknown key 'train.epoch'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_shard_option_defaults_are_the_schemas():
    from senet_dist.data import ShardConfig

    defaults = ShardConfig()
    helped = runner.invoke(app, ["shard", "--help"], env={"COLUMNS": "250"})
    for shown in (
        f"[default: {defaults.max_count}]",
        f"[default: {defaults.jpeg_quality}]",
        f"[default: {defaults.fractions[1]}]",
    ):
        assert shown in helped.output


def test_run_with_a_recipe_validates_it_before_prefect_or_ray(tmp_path):
    """`run --config RECIPE` merges the recipe, the options and --set, and refuses bad input with one line."""
    recipe = "densenet121_se_head_80_20"  # by name: shipped with the package
    no_data = runner.invoke(app, ["run", "--config", recipe, "--data", str(tmp_path / "nope")])
    assert no_data.exit_code == 2 and "neither an ImageFolder" in no_data.output
    bad_set = runner.invoke(app, ["run", "--config", recipe, "--set", "optimizer.name=lamb"])
    assert bad_set.exit_code == 2 and "optimizer.name must be one of" in bad_set.output
    (tmp_path / "r.yaml").write_text("variants: [se_resnet_tiny]\ntrain: {epochs: 1}\nshards: /tmp/x\n")
    bad_recipe = runner.invoke(app, ["run", "--config", str(tmp_path / "r.yaml")])
    assert bad_recipe.exit_code == 2 and "a recipe sets only" in bad_recipe.output
    for result in (no_data, bad_set, bad_recipe):
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_shard_and_train_take_object_storage_uris(tmp_path, s3_bucket):
    from senet_dist.data import DatasetInfo

    src = tmp_path / "lfw"
    assert runner.invoke(app, ["datasets", "fetch", "lfw-subset", str(src), "--limit-per-class", "10"]).exit_code == 0
    out = f"s3://{s3_bucket}/shards"
    first = runner.invoke(app, ["shard", str(src), out, "--max-count", "5", "--no-progress"])
    assert first.exit_code == 0 and "new version" in first.output, first.output
    assert sum(DatasetInfo.load(out).counts.values()) == 20
    for data, needle in ((f"s3://{s3_bucket}/nothing", "no LATEST"), (f"s3://{s3_bucket}-gone/x", "bucket does not")):
        bad = runner.invoke(app, ["train", "--model", "se_resnet_tiny", "--data", data])
        assert bad.exit_code == 2 and needle in bad.output and "Traceback" not in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
