"""Keep-best by the EMA's val accuracy (Ray's ranking, the run summary, run-dir resolution, patience) and the
launch settings that keep Ray's per-rank report lines out of the output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from senet_dist.train.checkpoint import META_FILE, CheckpointMeta, resolve_checkpoint
from senet_dist.train.config import TrainConfig
from senet_dist.train.launcher import RAY_TRAIN_LOG_LEVEL, _summarise, _trainer_options
from senet_dist.train.worker import RunState
from tests.helpers import epoch_metrics


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(num_workers=1, batch_size=8).with_overrides(kw)


def test_ray_ranks_checkpoints_by_keep_best_by_and_logs_quietly(tmp_path: Path) -> None:
    plain = _trainer_options(_cfg(), "r", str(tmp_path), None)["run_config"]
    assert plain.checkpoint_config.checkpoint_score_attribute == "val_acc"
    ema = _trainer_options(_cfg(**{"ema.enabled": True, "keep_best_by": "ema_val_acc"}), "r", str(tmp_path), None)
    assert ema["run_config"].checkpoint_config.checkpoint_score_attribute == "ema_val_acc"
    # no per-rank TrainingReport(...) INFO lines from ray.train; warnings still show
    assert plain.logging_config.log_level == RAY_TRAIN_LOG_LEVEL == "WARNING"


def test_summary_orders_kept_checkpoints_by_the_ranking_metric(tmp_path: Path) -> None:
    ckpts = [
        (SimpleNamespace(path=str(tmp_path / "a")), {"val_acc": 0.9, "ema_val_acc": 0.7}),
        (SimpleNamespace(path=str(tmp_path / "b")), {"val_acc": 0.8, "ema_val_acc": 0.95}),
    ]
    result = SimpleNamespace(best_checkpoints=ckpts, checkpoint=None)
    assert _summarise(result, "r", str(tmp_path), 1.0).best_checkpoint.endswith("a")
    assert _summarise(result, "r", str(tmp_path), 1.0, "ema_val_acc").best_checkpoint.endswith("b")


def test_a_run_dir_resolves_to_the_best_by_its_own_ranking(tmp_path: Path) -> None:
    for name, epoch, raw, ema in (("checkpoint_1", 1, 0.9, 0.6), ("checkpoint_2", 2, 0.7, 0.8)):
        d = tmp_path / name
        d.mkdir()
        metrics = epoch_metrics(epoch=epoch, val_acc=raw, ema_val_acc=ema)
        meta = CheckpointMeta(model="m", num_classes=2, classes=["a", "b"], epoch=epoch, metrics=metrics)
        (d / META_FILE).write_text(meta.model_copy(update={"keep_best_by": "ema_val_acc"}).to_json())
    assert resolve_checkpoint(tmp_path).name == "checkpoint_2"
    for d in tmp_path.iterdir():  # the same checkpoints ranked by the trained weights
        meta = json.loads((d / META_FILE).read_text())
        (d / META_FILE).write_text(json.dumps({**meta, "keep_best_by": "val_acc"}))
    assert resolve_checkpoint(tmp_path).name == "checkpoint_1"


def test_patience_counts_the_ranking_metric() -> None:
    run = RunState()
    assert [run.should_stop(s, patience=1) for s in (0.5, 0.7, 0.6)] == [False, False, True]
    assert run.best_val_acc == 0.7


def test_the_per_rank_report_line_is_quieted_where_ray_logs_it() -> None:
    """Ray names that logger by the file path; if a Ray upgrade renames it, this test says so."""
    import logging

    from ray.train.v2._internal.execution import context

    from senet_dist.train.worker import quiet_report_logs

    assert context.logger is logging.getLogger(context.__file__)
    quiet_report_logs()
    assert not context.logger.isEnabledFor(logging.INFO) and context.logger.isEnabledFor(logging.WARNING)
