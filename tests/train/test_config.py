"""TrainConfig: loading, overrides and validation errors raised before any worker starts."""

from __future__ import annotations

import json

import pytest

from senet_dist.train import ConfigError, TrainConfig


def test_defaults_validate_and_round_trip() -> None:
    cfg = TrainConfig().validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())  # JSON-safe: Ray ships it to workers and meta.json stores it


def test_overrides_dotted_alias_and_cli_strings() -> None:
    cfg = TrainConfig().with_overrides(
        [
            "epochs=3",
            "lr=0.05",
            "optimizer.name=adamw",
            "patience=null",
            "channels_last=true",
            "schedule.warmup_epochs=0.5",
        ]
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.optimizer.lr == 0.05 and cfg.optimizer.name == "adamw"
    assert cfg.patience is None and cfg.channels_last is True
    assert cfg.schedule.warmup_epochs == 0.5
    assert TrainConfig().with_overrides({"optimizer.lr": 0.2}).optimizer.lr == 0.2


def test_from_yaml_nested_and_shorthand(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "model: se_resnet_tiny\nepochs: 4\noptimizer: {name: sgd, lr: 1e-2}\nschedule: step\nmodel_kwargs: {width: 8}\n"
    )
    cfg = TrainConfig.from_file(p)
    assert cfg.optimizer.lr == pytest.approx(0.01)  # YAML 1.1 reads 1e-2 as a string; coerced
    assert cfg.schedule.name == "step" and cfg.model_kwargs == {"width": 8} and cfg.epochs == 4


def test_from_json(tmp_path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": "se_resnet_tiny", "batch_size": 64, "optimizer.lr": 0.3}))
    cfg = TrainConfig.from_file(p)
    assert (cfg.batch_size, cfg.optimizer.lr) == (64, 0.3)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("learning_rate: 0.1\n", "unknown key 'learning_rate'"),
        ("optimizer: {lr: 0.1, momentun: 0.9}\n", "unknown key 'optimizer.momentun'"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("epochs: [1\n", "cannot parse"),
    ],
)
def test_bad_files_are_rejected(tmp_path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        TrainConfig.from_file(p)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file("/nonexistent/config.yaml")


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"model": "se_resnet_9000"}, "unknown model 'se_resnet_9000'; valid names"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"batch_size": 1, "num_workers": 2}, "smaller than num_workers"),
        ({"batch_size": 9, "num_workers": 2}, "not divisible by num_workers"),
        ({"optimizer.lr": 0}, "optimizer.lr must be > 0, got 0"),
        ({"optimizer.lr": -1e-3}, "optimizer.lr must be > 0"),
        ({"optimizer.name": "lamb"}, "optimizer.name must be one of 'sgd', 'adam' or 'adamw', got 'lamb'"),
        ({"schedule.name": "linear"}, "schedule.name must be one of"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"precision": "fp16"}, "fp16 needs use_gpu"),
        ({"image_size": 16}, "image_size must be >= 32"),
        ({"keep_best_n": 0}, "keep_best_n must be >= 1"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"fault_kill_rank": 1}, "unknown key 'fault_kill_rank'"),  # test hooks are not config (train.faults)
        ({"loader": {"hflipp": True}}, "unknown key 'loader.hflipp'"),
        ({"loader.batch_size": 4}, "unknown key 'loader.batch_size'"),  # owned by the run: batch_size
        ({"loader.decoder": "cv2"}, "loader.decoder must be one of 'torchvision' or 'pil', got 'cv2'"),
        ({"channels_last": "maybe"}, "channels_last must be auto, true or false"),
    ],
)
def test_validation_errors(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrainConfig().with_overrides(overrides).validate()


def test_missing_dataset_dir(tmp_path, lfw_version) -> None:
    with pytest.raises(ConfigError, match="dataset directory does not exist"):
        TrainConfig().validate(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a dataset version directory"):  # a directory, but no version in it
        TrainConfig().validate(tmp_path)
    TrainConfig().validate(lfw_version)


def test_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="epochs: expected int"):
        TrainConfig().with_overrides(["epochs=three"])
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        TrainConfig().with_overrides({"epochs": 2.5})
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig().with_overrides(["epochs"])


def test_derived_values() -> None:
    cfg = TrainConfig(batch_size=128, num_workers=4)
    assert cfg.per_worker_batch_size == 32
    assert cfg.resolved_precision(on_gpu=True) == "bf16" and cfg.resolved_precision(on_gpu=False) == "fp32"
    assert cfg.resolved_channels_last(True) and not cfg.resolved_channels_last(False)
    assert TrainConfig(precision="bf16").resolved_precision(on_gpu=False) == "bf16"


def test_cli_helpers_resolve_data_and_layer_config(tmp_path) -> None:
    from senet_dist.cli.train import load_config
    from senet_dist.data import DatasetError, resolve_version

    p = tmp_path / "c.yaml"
    p.write_text("model: se_resnet_tiny\nepochs: 4\n")
    cfg = load_config("se_resnet18", p, ["epochs=2"])
    assert (cfg.model, cfg.epochs) == ("se_resnet18", 2)  # --model beats the file, --set beats the file
    assert load_config(None, p).model == "se_resnet_tiny"
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_version(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a dataset version directory"):
        resolve_version(tmp_path)
    version = tmp_path / "v0001-abc"
    version.mkdir()
    (version / "dataset.json").write_text("{}")
    assert resolve_version(version) == str(version)


def test_parse_overrides_for_the_cli() -> None:
    from senet_dist.schema import parse_overrides

    assert parse_overrides(["epochs=3", "lr=1e-2", "patience=null", "model_kwargs={width: 8}"]) == {
        "epochs": 3,
        "lr": "1e-2",
        "patience": None,
        "model_kwargs": {"width": 8},
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_yaml_round_trip_reproduces_the_config(tmp_path) -> None:
    cfg = TrainConfig().with_overrides(
        [
            "model=se_resnet_tiny",
            "lr=0.05",
            "loader.crop_scale=[0.5, 1.0]",
            "model_kwargs={width: 8}",
            "resources_per_worker={CPU: 0.5}",
        ]
    )
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_file(path) == cfg


def test_a_section_named_by_a_string_keeps_its_other_values() -> None:
    cfg = TrainConfig().with_overrides({"optimizer.lr": 0.3}).with_overrides(["optimizer=adamw"])
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adamw", 0.3)
    assert (
        TrainConfig().with_overrides({"loader": {"hflip": False}}).loader.num_workers
        == TrainConfig().loader.num_workers
    )
    assert TrainConfig().with_overrides(["loader_workers=3"]).loader.num_workers == 3  # shorthand


def test_every_error_is_one_line_with_path_value_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_overrides({"precision": "fp8", "epochs": 0, "schedule.name": "linear"})
    message = str(info.value)
    assert "\n" not in message
    assert "precision must be one of 'auto', 'bf16', 'fp16' or 'fp32', got 'fp8'" in message
    assert "epochs must be >= 1, got 0" in message and "schedule.name must be one of" in message


def test_shard_and_pipeline_configs_share_the_schema() -> None:
    from senet_dist.data import ShardConfig
    from senet_dist.pipeline import PipelineConfig

    assert ShardConfig.parse({"val_frac": 0.2, "test_frac": 0}).fractions == (0.8, 0.2, 0.0)
    with pytest.raises(ConfigError, match="unknown key 'max_cnt'"):
        ShardConfig.parse({"max_cnt": 3})
    with pytest.raises(ConfigError, match="image_format must be one of 'jpg' or 'png', got 'gif'"):
        ShardConfig.parse({"image_format": "gif"})
    cfg = PipelineConfig.parse({"train": {"epochs": 3, "lr": 0.05}, "shard": {"max_count": 32}})
    assert (cfg.train.epochs, cfg.train.optimizer.lr, cfg.shard.max_count) == (3, 0.05, 32)
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        PipelineConfig.parse({"train": {"learning_rate": 0.1}})


def test_defaults_live_in_the_schema_only(monkeypatch) -> None:
    """The flow, check-data and the CLI leave unset values to PipelineConfig (one place for each default)."""
    import inspect

    from flows.check_data import check_data
    from flows.train_senet import train_senet
    from senet_dist.pipeline import PipelineConfig

    for fn in (train_senet.fn, check_data.fn):
        params = inspect.signature(fn).parameters
        assert all(params[name].default is None for name in ("data", "shards") if name in params)
    monkeypatch.setenv("SENET_ARTIFACTS", "s3://bucket/art")
    assert PipelineConfig().artifacts == "s3://bucket/art"
    monkeypatch.delenv("SENET_ARTIFACTS")
    assert (PipelineConfig().data, PipelineConfig().shards, PipelineConfig().artifacts) == (
        "lfw-subset",
        "data/shards",
        "artifacts",
    )
