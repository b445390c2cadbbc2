"""Measuring a model on a dataset version's test split for the gate: the recorded evaluation when there is one, else
a new evaluation of its checkpoint (appended to ``evaluations`` like any other). The gate needs this for a champion
trained on an older version, so that both numbers it compares describe the same images."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from senet_dist.artifacts import ArtifactStore
from senet_dist.release.registry import ModelRecord, RegistryError, latest_evaluation, metrics_from_evaluation
from senet_dist.storage import local_dir

log = logging.getLogger(__name__)


class IncompatibleModel(ValueError):
    """A model cannot be evaluated on a dataset version (its classes differ)."""


def test_metrics(store: ArtifactStore, rec: ModelRecord, version_dir: str | Path) -> tuple[dict[str, Any], bool]:
    """``(metrics, evaluated_now)`` of a model on ``version_dir``'s test split (``val`` for a version sharded
    without one, as the pipeline reports it): the recorded evaluation, or a new one (appended to ``evaluations``).
    Raises :class:`IncompatibleModel` when the classes differ."""
    from senet_dist.data import DatasetInfo
    from senet_dist.evaluate import evaluate_checkpoint, report_split
    from senet_dist.train.checkpoint import read_meta

    info = DatasetInfo.load(version_dir)
    split = report_split(version_dir)
    if rec.run_id is not None:
        row = latest_evaluation(store, rec.run_id, info.version, split)
        if row is not None:
            return metrics_from_evaluation(row), False
    if not rec.checkpoint_uri:
        raise RegistryError(f"model {rec.model_id} has no checkpoint to evaluate")
    with tempfile.TemporaryDirectory(prefix="senet-gate-") as tmp:
        ckpt = local_dir(rec.checkpoint_uri, Path(tmp))
        classes = read_meta(ckpt).get("classes")
        if list(classes or []) != list(info.classes):
            raise IncompatibleModel(f"its classes {classes} differ from {info.version}'s {list(info.classes)}")
        log.info("evaluating %s on %s/%s", rec.model_id, info.version, split)
        report = evaluate_checkpoint(ckpt, info.version_dir, split=split, run_id=rec.run_id or rec.model_id)
    if rec.variant:
        report.variant = rec.variant
    row = {**report.to_dict(), "split": split}
    store.append("evaluations", [row])
    return metrics_from_evaluation(row), True
