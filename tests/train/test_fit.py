"""CI run: tiny SE-ResNet, 2 CPU Ray workers (gloo), real lfw-subset shards; then evaluate the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from senet_dist.evaluation.metrics import evaluate_checkpoint
from senet_dist.evaluation.report import plot_confusion_matrix, plot_curves
from senet_dist.train import CONFIG_FILE, ConfigError, TrainConfig, fit
from senet_dist.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, read_meta
from senet_dist.train.progress import ProgressEvent

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def progress_events() -> list[ProgressEvent]:
    """What ``fit(on_progress=...)`` delivered in the driver during the ``fitted`` run."""
    return []


@pytest.fixture(scope="module")
def fitted(ray_session, lfw_version: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config, progress_events):
    storage = tmp_path_factory.mktemp("runs")
    # 3 checkpoints reported, at most 2 may survive; an EMA of the weights evaluated next to them
    cfg = tiny_config(epochs=3, keep_best_n=1, **{"ema.enabled": True, "ema.decay": 0.9})
    result = fit(
        "se_resnet_tiny", lfw_version, cfg, storage_path=storage, run_name="ci-tiny", on_progress=progress_events.append
    )
    return result, storage, cfg


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
    assert meta.metrics is not None and meta.metrics.val_acc == max(e.val_acc for e in result.history)
    assert meta.classes == ["face", "non_face"] and meta.num_classes == 2
    assert meta.preprocess is not None and meta.preprocess.image_size == 32  # the eval view, typed
    assert meta.weights_sha256 is not None and len(meta.weights_sha256) == 64
    state = load_checkpoint(best)
    assert {"model", "optimizer", "scheduler", "run", "config"} <= set(state)
    assert not any(k.startswith("module.") for k in state["model"])  # unwrapped from DDP
    last = read_meta(result.last_checkpoint)
    assert last.epoch == 3 and len(last.history) == 3


@pytest.mark.timeout(240)
def test_best_checkpoint_beats_chance_on_test(fitted, lfw_version: Path, tmp_path: Path) -> None:
    result, _, _ = fitted
    report = evaluate_checkpoint(result.best_checkpoint, lfw_version, split="test", batch_size=8, device="cpu")
    assert report.num_samples == 20 and report.accuracy > 0.7
    assert report.run_id == "ci-tiny" and report.variant == "se_resnet_tiny"
    assert Path(plot_curves(result.history, tmp_path / "curves.png")).stat().st_size > 1000
    assert Path(plot_confusion_matrix(report.confusion_matrix, report.classes, tmp_path / "cm.png")).is_file()


@pytest.mark.timeout(240)
def test_ema_is_evaluated_every_epoch_and_checkpointed_beside_the_weights(fitted, lfw_version: Path) -> None:
    result, _, _ = fitted
    assert all(e.ema_val_acc is not None and e.ema_val_loss is not None for e in result.history)
    best = Path(result.best_checkpoint)
    meta, state = read_meta(best), load_checkpoint(best)
    steps = result.history[0].steps
    assert state["ema"]["updates"] == steps * meta.epoch  # one update per optimizer step
    assert state["ema"]["model"].keys() == state["model"].keys()
    assert any(not torch.equal(state["ema"]["model"][k], v) for k, v in state["model"].items())
    m = meta.metrics
    assert m is not None and m.ema_val_acc is not None
    assert meta.better_weights == ("ema" if m.ema_val_acc > m.val_acc else "model")
    report = evaluate_checkpoint(best, lfw_version, split="val", batch_size=8, device="cpu")
    assert report.weights == meta.better_weights  # evaluation scores the better one and says which
    better = max(m.val_acc, m.ema_val_acc)
    assert report.accuracy == pytest.approx(better, abs=0.051)  # the val split the worker scored (1 image slack)


def test_progress_reaches_the_driver_for_every_epoch(fitted, progress_events) -> None:
    result, _, _ = fitted
    assert {e.epoch for e in progress_events} == {1, 2, 3}
    for epoch in (1, 2, 3):
        last = [e for e in progress_events if e.epoch == epoch][-1]
        assert last.step == last.steps == result.history[epoch - 1].steps and last.img_per_s > 0
        assert last.epochs == 3


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
