"""A model's metrics on a dataset version's test split: the recorded evaluation when there is one (the
``evaluations`` table), else a new evaluation of its checkpoint. The gate needs this for a champion trained on an
older version, so that both numbers it compares describe the same images; an export puts it in ``model.json``."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from senet_dist.artifacts import ArtifactStore
from senet_dist.release.registry import ModelRecord, RegistryError
from senet_dist.storage import local_dir

log = logging.getLogger(__name__)


class IncompatibleModel(ValueError):
    """A model cannot be evaluated on a dataset version (its classes differ)."""


def metrics_from_evaluation(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers the registry keeps from an ``evaluations`` row."""
    cm = row.get("confusion_matrix") or []
    return {
        "split": row.get("split") or "test",
        "dataset_version": row.get("dataset_version"),
        "accuracy": row.get("accuracy"),
        "macro_f1": row.get("macro_f1"),
        "weighted_f1": row.get("weighted_f1"),
        "top_k_accuracy": row.get("top_k_accuracy"),
        "num_samples": int(sum(sum(r) for r in cm)) if cm else None,
    }


def latest_evaluation(store: ArtifactStore, run_id: str, version: str, split: str = "test") -> dict[str, Any] | None:
    """The newest ``evaluations`` row of ``run_id`` on ``split`` of dataset version ``version``."""
    rows = store.read(
        "evaluations",
        filter=(pc.field("run_id") == run_id) & (pc.field("dataset_version") == version) & (pc.field("split") == split),
    ).to_pylist()
    return max(rows, key=lambda r: r["created_at"]) if rows else None


def with_metrics(rec: ModelRecord, metrics: dict[str, Any]) -> ModelRecord:
    return replace(
        rec,
        eval_dataset_version=metrics.get("dataset_version"),
        accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"),
        metrics_json=json.dumps(metrics, sort_keys=True),
    )


def test_metrics(
    store: ArtifactStore | None,
    version_dir: str | Path,
    *,
    run_id: str | None,
    checkpoint: str | os.PathLike[str] | None,
    model_id: str | None = None,
    variant: str | None = None,
    record: bool = True,
    device: str = "auto",
) -> tuple[dict[str, Any], bool]:
    """``(metrics, evaluated_now)`` of a model on ``version_dir``'s test split (``val`` for a version sharded
    without one, as the pipeline reports it): ``run_id``'s recorded evaluation, or a new one of ``checkpoint``
    (a directory or URI). Raises :class:`IncompatibleModel` when the classes differ.

    The gate uses the defaults: the new evaluation is appended to ``evaluations`` (under ``run_id``, else
    ``model_id``) so the next gate reuses it. An export passes ``record=False`` (it only reads the tables, may have
    no store, and its checkpoint need not be a registered run) and ``device="cpu"`` (it loads and verifies the model
    on the CPU)."""
    from senet_dist.data import DatasetInfo
    from senet_dist.evaluate import evaluate_checkpoint, report_split
    from senet_dist.train.checkpoint import read_meta

    info = DatasetInfo.load(version_dir)
    split = report_split(version_dir)
    if store is not None and run_id:
        row = latest_evaluation(store, run_id, info.version, split)
        if row is not None:
            return metrics_from_evaluation(row), False
    name = model_id or run_id
    if not checkpoint:
        raise RegistryError(f"model {name} has no checkpoint to evaluate")
    with tempfile.TemporaryDirectory(prefix="senet-eval-") as tmp:
        ckpt = local_dir(checkpoint, Path(tmp))
        classes = read_meta(ckpt).get("classes")
        if list(classes or []) != list(info.classes):
            raise IncompatibleModel(f"its classes {classes} differ from {info.version}'s {list(info.classes)}")
        log.info("evaluating %s on %s/%s", name, info.version, split)
        report = evaluate_checkpoint(ckpt, info.version_dir, split=split, device=device, run_id=run_id or model_id)
    if variant:
        report.variant = variant
    row = {**report.to_dict(), "split": split}
    if record and store is not None:
        store.append("evaluations", [row])
    return metrics_from_evaluation(row), True
