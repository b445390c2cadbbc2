"""CI run: tiny SE-ResNet, 2 CPU Ray workers (gloo), real lfw-subset shards; then evaluate the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from senet_dist.evaluate import evaluate_checkpoint
from senet_dist.plots import plot_confusion_matrix, plot_curves
from senet_dist.train import CONFIG_FILE, ConfigError, TrainConfig, fit
from senet_dist.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, read_meta

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fitted(ray_session, lfw_version: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config):
    storage = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(epochs=3, keep_best_n=1)  # 3 checkpoints reported, at most 2 may survive
    return fit("se_resnet_tiny", lfw_version, cfg, storage_path=storage, run_name="ci-tiny"), storage, cfg


@pytest.mark.timeout(240)
def test_two_worker_run_learns(fitted) -> None:
    result, _, _ = fitted
    assert result.epochs_completed == 3
    h = result.history
    assert [e.epoch for e in h] == [1, 2, 3]
    assert all(e.world_size == 2 for e in h)
    assert h[-1].train_loss < h[0].train_loss
    assert max(e.val_acc for e in h) > 0.7  # 2 balanced classes: chance is 0.5
    assert result.num_params and result.num_params > 1000


@pytest.mark.timeout(240)
def test_checkpoints_and_keep_best_n(fitted) -> None:
    result, storage, _ = fitted
    on_disk = sorted(p for p in (Path(storage) / "ci-tiny").glob("checkpoint_*") if p.is_dir())
    # keep_best_n=1 of 3 reported: the best by val_acc, plus the latest if it is a different one
    assert 1 <= len(on_disk) <= 2
    assert {str(p) for p in on_disk} == set(result.checkpoints) | {result.last_checkpoint}
    best = Path(result.best_checkpoint)
    assert (best / CHECKPOINT_FILE).is_file()
    meta = read_meta(best)
    assert meta["metrics"]["val_acc"] == max(e.val_acc for e in result.history)
    assert meta["classes"] == ["face", "non_face"] and meta["num_classes"] == 2
    state = load_checkpoint(best)
    assert {"model", "optimizer", "scheduler", "run", "config"} <= set(state)
    assert not any(k.startswith("module.") for k in state["model"])  # unwrapped from DDP
    last = read_meta(result.last_checkpoint)
    assert last["epoch"] == 3 and len(last["history"]) == 3


@pytest.mark.timeout(240)
def test_best_checkpoint_beats_chance_on_test(fitted, lfw_version: Path, tmp_path: Path) -> None:
    result, _, _ = fitted
    report = evaluate_checkpoint(result.best_checkpoint, lfw_version, split="test", batch_size=8, device="cpu")
    assert report.num_samples == 20 and report.accuracy > 0.7
    assert report.run_id == "ci-tiny" and report.variant == "se_resnet_tiny"
    assert plot_curves(result.history, tmp_path / "curves.png").stat().st_size > 1000
    assert plot_confusion_matrix(report.confusion_matrix, report.classes, tmp_path / "cm.png").is_file()


def test_the_resolved_config_is_saved_with_the_run(fitted) -> None:
    """``senet-dist train --config <run>/config.yaml`` reproduces the run: the file is the whole resolved config."""
    _, storage, cfg = fitted
    saved = TrainConfig.from_file(Path(storage) / "ci-tiny" / CONFIG_FILE)
    assert saved == cfg.with_overrides({"model": "se_resnet_tiny"})
    assert saved.loader.crop_scale == (0.5, 1.0) and saved.epochs == 3


def test_bad_config_fails_before_ray_starts(lfw_version: Path, tmp_path: Path, tiny_config) -> None:
    import ray

    was_up = ray.is_initialized()
    with pytest.raises(ConfigError, match="optimizer.lr must be > 0"):
        fit("se_resnet_tiny", lfw_version, tiny_config(**{"optimizer.lr": 0.0}), storage_path=tmp_path)
    with pytest.raises(ConfigError, match="unknown model"):
        fit("se_resnet_404", lfw_version, tiny_config(), storage_path=tmp_path)
    with pytest.raises(ConfigError, match="dataset directory does not exist"):
        fit("se_resnet_tiny", tmp_path / "missing", tiny_config(), storage_path=tmp_path)
    assert ray.is_initialized() == was_up
