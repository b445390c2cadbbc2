"""The pipeline's steps as plain functions: shard -> train each variant -> evaluate -> record -> promote.

The Prefect flows in ``flows/`` wrap these one-to-one as tasks, so everything here is testable and usable
without Prefect; the flows add retries, concurrency, state and artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from senet_dist.artifacts import ArtifactStore, RunRow, checkpoint_row, dataset_row, epoch_row, utcnow
from senet_dist.data import DatasetInfo, ShardResult, shard_dataset, sharding_executor, source_changed
from senet_dist.pipeline.config import PipelineConfig, locate
from senet_dist.pipeline.runs import config_json
from senet_dist.storage import join, redact, tree_bytes
from senet_dist.train import FitResult, RaySession
from senet_dist.train.checkpoint import checkpoint_digest, read_meta_at

if TYPE_CHECKING:
    from senet_dist.release.gate import GateResult


@dataclass(frozen=True)
class VariantSummary:
    """One trained variant's line on the leaderboard, as the flow publishes it."""

    variant: str
    run_id: str
    accuracy: float
    macro_f1: float
    params: int | None
    img_per_s: float  # evaluation throughput
    epochs: int
    wall_seconds: float
    reports: str  # URI of report.json and the plots
    confusion_matrix: list[list[int]]
    class_names: list[str]


def data_changed(cfg: PipelineConfig) -> tuple[bool, str]:
    """Whether the source's fingerprint differs from the newest dataset version under ``cfg.shards`` (cheap: no
    encoding), and that fingerprint."""
    shards_root, src = locate(cfg.data, cfg.shards)
    return source_changed(src, shards_root, cfg.shard)


def prepare_dataset(cfg: PipelineConfig, store: ArtifactStore, session: RaySession | None = None) -> ShardResult:
    """Shard the source (a no-op when unchanged) and record a new dataset version in the ``datasets`` table.

    In a ``session`` joined to a cluster, with source and shards on object storage, the shard groups are written by
    Ray tasks on every node; otherwise by this machine's processes (the same rows either way)."""
    shards_root, src = locate(cfg.data, cfg.shards)
    on_cluster = session is not None and not session.fixed_size
    executor = sharding_executor(str(src), str(shards_root), ray_is_cluster=on_cluster)
    result = shard_dataset(src, shards_root, cfg.shard, executor=executor)
    if result.changed or store.latest("datasets", "fingerprint", result.fingerprint) is None:
        info = DatasetInfo.load(result.version_dir)
        store.append(
            "datasets",
            [
                dataset_row(
                    info.version,
                    info.fingerprint,
                    info.classes,
                    info.counts,
                    source=redact(str(src)),
                    uri=result.version_dir,
                    num_rejected=result.num_rejected,
                )
            ],
        )
    return result


def train_variant(
    variant: str,
    version_dir: str | Path,
    cfg: PipelineConfig,
    store: ArtifactStore,
    *,
    run_id: str,
    flow_run_id: str | None = None,
    session: RaySession | None = None,
) -> VariantSummary:
    """Train, evaluate and record one variant. A failure is recorded as a ``failed`` run, then raised as it was
    (ConfigError, TrainingError, ...), so the caller's retry rule can read its type."""
    from senet_dist.train import fit

    info = DatasetInfo.load(version_dir)
    train_cfg = cfg.train_config(variant)  # validated against the data once, by fit, before any worker starts
    started = utcnow()
    run = RunRow(
        run_id=run_id,
        status="running",
        flow_run_id=flow_run_id,
        variant=variant,
        config_json=config_json(train_cfg),
        config_yaml=train_cfg.to_yaml(),
        dataset_version=info.version,
        dataset_fingerprint=info.fingerprint,
        started_at=started,
        updated_at=started,
    )
    store.append("runs", [run.row()])
    t0 = time.perf_counter()
    try:
        result = fit(
            variant,
            version_dir,
            train_cfg,
            storage_path=join(cfg.artifacts_abs, "ray"),
            run_name=run_id,
            session=session,
            ray_address=cfg.ray_address,
        )
        return _record_success(store, run, result, version_dir, cfg, time.perf_counter() - t0)
    except BaseException as exc:
        ended = utcnow()
        failed = run.then(
            status="failed",
            ended_at=ended,
            updated_at=ended,
            wall_seconds=time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {exc}",
        )
        store.append("runs", [failed.row()])
        raise


def _record_success(
    store: ArtifactStore,
    run: RunRow,
    result: FitResult,
    version_dir: str | Path,
    cfg: PipelineConfig,
    wall: float,
) -> VariantSummary:
    """Evaluate the best checkpoint (as a Ray task on a node like the run's workers when Ray is up, else here),
    write plots/report next to the tables, append every table's rows."""
    from senet_dist.evaluation.cluster import eval_placement, evaluate_run
    from senet_dist.evaluation.metrics import report_split
    from senet_dist.evaluation.report import write_report

    run_id, variant = run.run_id, str(run.variant)
    if result.best_checkpoint is None:
        raise RuntimeError(f"run {run_id} finished without a checkpoint to evaluate")
    split = report_split(version_dir)
    placement = eval_placement(cfg.train_config(variant))
    evaluation = evaluate_run(result.best_checkpoint, version_dir, split, placement, run_id=run_id)
    report = evaluation.report
    report.variant, report.dataset_version = variant, str(run.dataset_version)
    reports_uri = join(cfg.artifacts_abs, "reports", run_id)
    write_report(report, reports_uri, samples=evaluation.samples, history=result.history)
    _append_new(store, "epochs", run_id, [epoch_row(run_id, m) for m in result.history], "epoch")
    _append_new(store, "checkpoints", run_id, checkpoint_rows(run_id, result.checkpoints), "uri")
    store.append("evaluations", [{**report.to_dict(), "split": report.split}])
    ended = utcnow()
    completed = run.then(
        status="completed",
        ended_at=ended,
        updated_at=ended,
        best_checkpoint_uri=result.best_checkpoint,
        num_params=result.num_params,
        epochs_completed=result.epochs_completed,
        wall_seconds=wall,
    )
    store.append("runs", [completed.row()])
    return VariantSummary(
        variant=variant,
        run_id=run_id,
        accuracy=report.accuracy,
        macro_f1=report.macro_f1,
        params=result.num_params,
        img_per_s=round(report.img_per_s, 1),
        epochs=result.epochs_completed,
        wall_seconds=round(wall, 1),
        reports=reports_uri,
        confusion_matrix=report.confusion_matrix.astype(int).tolist(),
        class_names=list(report.classes),
    )


def _append_new(store: ArtifactStore, table: str, run_id: str, rows: list[dict[str, Any]], key: str) -> None:
    """Append only rows this run has not recorded yet, so a retried task never duplicates epochs or checkpoints."""
    seen = set(store.read(table, filter=pc.field("run_id") == run_id).column(key).to_pylist())
    fresh = [r for r in rows if r[key] not in seen]
    if fresh:
        store.append(table, fresh)


def checkpoint_rows(run_id: str, checkpoints: list[str]) -> list[dict[str, Any]]:
    """The checkpoint index: one row per kept checkpoint with its epoch, val_acc, total bytes and weights' sha256
    (read from its metadata: the weights are not downloaded again)."""
    rows = []
    for uri in checkpoints:
        meta = read_meta_at(uri)
        val_acc = meta.metrics.val_acc if meta.metrics is not None else None
        rows.append(
            checkpoint_row(
                run_id, meta.epoch, str(uri), val_acc=val_acc, size=tree_bytes(uri), sha256=checkpoint_digest(uri)
            )
        )
    return rows


def promote(cfg: PipelineConfig, version_dir: str, run_ids: list[str]) -> GateResult:
    """The promotion gate of ``cfg``'s dataset for the runs this flow run completed; a new champion is exported
    under ``<artifacts>/exports`` (beside the tables, never inside one)."""
    from senet_dist.release.gate import promote_best

    store = ArtifactStore(cfg.artifacts_abs)
    export_root = join(cfg.artifacts_abs, "exports")
    return promote_best(store, cfg.registry_dataset, version_dir, run_ids, export_root=export_root)
