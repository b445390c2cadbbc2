"""The pipeline's steps as plain functions: shard -> train each variant -> evaluate -> store.

The Prefect flows in ``flows/`` wrap these one-to-one as tasks, so everything here is testable and usable
without Prefect; the flows add retries, concurrency, state and artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow.compute as pc

from senet_dist.artifacts import ArtifactStore, dataset_row
from senet_dist.data import (
    DatasetInfo,
    ShardConfig,
    ShardResult,
    fetch_dataset,
    fingerprint_source,
    latest_version,
    list_datasets,
    shard_dataset,
)
from senet_dist.data.shard import HASH_CACHE_NAME
from senet_dist.storage import download_dir, is_local, is_uri, join, read_bytes, tree_bytes, upload_dir
from senet_dist.train.checkpoint import CHECKPOINT_FILE, META_FILE

if TYPE_CHECKING:
    from senet_dist.train import TrainConfig

DEFAULT_VARIANTS = ["se_resnet_tiny", "se_resnet_cifar"]


@dataclass
class PipelineConfig:
    """What one pipeline run needs; the flow's parameters map onto it field by field."""

    data: str = "lfw-subset"
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    shards: str = "data/shards"
    artifacts: str = field(default_factory=lambda: os.environ.get("SENET_ARTIFACTS", "artifacts"))
    train: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    shard: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    ray_address: str | None = None

    def train_config(self, variant: str) -> "TrainConfig":
        """The variant's TrainConfig: shared ``train`` overrides plus its own ``model_kwargs`` entry."""
        from senet_dist.train import TrainConfig

        cfg = TrainConfig(model=variant).with_overrides(self.train)
        if variant in self.model_kwargs:
            cfg = cfg.with_overrides({"model_kwargs": {**cfg.model_kwargs, **self.model_kwargs[variant]}})
        return cfg

    @property
    def artifacts_abs(self) -> str:
        """The artifacts root as an absolute path or URI (flows run from a worker's working directory)."""
        return self.artifacts if is_uri(self.artifacts) else str(Path(self.artifacts).expanduser().resolve())

    def validate(self) -> None:
        """Fail before any work starts: unknown variants, bad train/shard overrides, missing data."""
        from senet_dist.models import check_model_name

        if not self.variants:
            raise ValueError("variants must name at least one model")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants contains duplicates: {self.variants}")
        for name in self.variants:
            self.train_config(name).validate()  # unknown model names included
        for name in self.model_kwargs:  # entries for variants not trained this run are fine; typos are not
            check_model_name(name)
        shard_config(self.shard)
        if _builtin(self.data) is None and not Path(self.data).expanduser().is_dir():
            raise FileNotFoundError(
                f"data {self.data!r} is neither an ImageFolder directory nor a built-in dataset ({', '.join(list_datasets())})"
            )


def shard_config(overrides: dict[str, Any]) -> ShardConfig:
    """A ShardConfig from flow parameters; unknown keys are an error, not silently ignored."""
    known = set(ShardConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown shard option(s) {unknown}; valid: {sorted(known)}")
    return ShardConfig(**overrides)


def resolve_source(data: str, cache_dir: Path) -> Path:
    """An ImageFolder path as given, or a built-in offline dataset (``name`` or ``name:N`` for N images per class)
    materialised once under ``cache_dir``."""
    builtin = _builtin(data)
    if builtin is not None:
        name, limit = builtin
        dest = cache_dir / (name if limit is None else f"{name}-{limit}")
        return Path(fetch_dataset(name, dest, limit_per_class=limit))
    path = Path(data).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist")
    return path


def _builtin(data: str) -> tuple[str, int | None] | None:
    """Parse ``fashion-mnist`` / ``fashion-mnist:500``; None for anything that is not a built-in dataset name."""
    name, _, limit = data.partition(":")
    if name not in list_datasets() or Path(data).is_dir():
        return None
    if limit and not limit.isdigit():
        raise ValueError(f"bad dataset spec {data!r}: expected NAME or NAME:IMAGES_PER_CLASS")
    return name, int(limit) if limit else None


def _locate(data: str, shards: str) -> tuple[Path, Path]:
    """(shards root, ImageFolder source): one derivation for check-data and sharding, so their fingerprints agree."""
    shards_root = Path(shards).expanduser().resolve()
    return shards_root, resolve_source(data, shards_root.parent / "sources")


def data_changed(data: str, shards: str, shard_overrides: dict[str, Any]) -> tuple[bool, str]:
    """Whether the source's fingerprint differs from the newest dataset version under ``shards`` (cheap: no encoding)."""
    shards_root, src = _locate(data, shards)
    cache = shards_root / HASH_CACHE_NAME if shards_root.is_dir() else None
    fingerprint = fingerprint_source(src, shard_config(shard_overrides), cache_path=cache)
    latest = latest_version(shards_root)
    return latest is None or DatasetInfo.load(latest).fingerprint != fingerprint, fingerprint


def prepare_dataset(cfg: PipelineConfig, store: ArtifactStore) -> ShardResult:
    """Shard the source (a no-op when unchanged) and record a new dataset version in the ``datasets`` table."""
    shards_root, src = _locate(cfg.data, cfg.shards)
    result = shard_dataset(src, shards_root, shard_config(cfg.shard))
    if result.changed or store.latest("datasets", "fingerprint", result.fingerprint) is None:
        info = DatasetInfo.load(result.version_dir)
        store.append("datasets", [dataset_row(info.version, info.fingerprint, info.classes, info.counts, source=str(src),
                                              uri=str(result.version_dir), num_rejected=result.num_rejected)])
    return result


def variants_to_train(store: ArtifactStore, fingerprint: str, cfg: PipelineConfig) -> list[str]:
    """Variants without a completed run on this dataset fingerprint with the same training config (all when forced)."""
    if cfg.force:
        return list(cfg.variants)
    done = {
        (row["variant"], row["config_json"])
        for row in store.runs_latest().to_pylist()
        if row["dataset_fingerprint"] == fingerprint and row["status"] == "completed"
    }
    return [v for v in cfg.variants if (v, config_json(cfg.train_config(v))) not in done]


def config_json(train_cfg: "TrainConfig") -> str:
    """Canonical JSON of a training config: what the runs table records and the skip decision compares."""
    return json.dumps(train_cfg.to_dict(), sort_keys=True)


def run_id_for(store: ArtifactStore, variant: str, fingerprint: str, cfg: PipelineConfig,
               flow_run_id: str | None = None, *, finished: Callable[[str], bool] = lambda _: False) -> str:
    """Resume before restarting: the newest unfinished run (``running`` when its driver was killed, or ``failed``)
    of this variant on the same data and config keeps its id, so Ray Train continues from its last checkpoint.

    Only runs of this flow run, or of flow runs that ``finished(flow_run_id)`` proves are over (crashed, failed),
    are adopted: a run another live flow is training is never shared."""
    wanted = config_json(cfg.train_config(variant))
    unfinished = [
        row for row in store.runs_latest().to_pylist()
        if row["variant"] == variant and row["dataset_fingerprint"] == fingerprint
        and row["config_json"] == wanted and row["status"] in ("running", "failed")
        and row["flow_run_id"] and (row["flow_run_id"] == flow_run_id or finished(row["flow_run_id"]))
    ]
    if unfinished:
        return max(unfinished, key=lambda r: r["updated_at"])["run_id"]
    return new_run_id(variant, flow_run_id)


def new_run_id(variant: str, flow_run_id: str | None = None) -> str:
    """Deterministic per (flow run, variant) so a Prefect retry resumes the same Ray Train run from its checkpoint."""
    suffix = flow_run_id.split("-")[0] if flow_run_id else uuid.uuid4().hex[:8]
    return f"{variant}-{suffix}"


def train_variant(
    variant: str,
    version_dir: Path,
    cfg: PipelineConfig,
    store: ArtifactStore,
    *,
    run_id: str,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and record one variant; returns its leaderboard summary. Failures are recorded, then raised."""
    from senet_dist.train import fit

    info = DatasetInfo.load(version_dir)
    train_cfg = cfg.train_config(variant).validate(version_dir)
    started = _now()
    base_row = {
        "run_id": run_id, "flow_run_id": flow_run_id, "variant": variant, "config_json": config_json(train_cfg),
        "dataset_version": info.version, "dataset_fingerprint": info.fingerprint, "started_at": started,
    }
    store.append("runs", [{**base_row, "status": "running", "updated_at": started}])
    t0 = time.perf_counter()
    try:
        result = fit(variant, version_dir, train_cfg, storage_path=join(cfg.artifacts_abs, "ray"),
                     run_name=run_id, ray_address=cfg.ray_address)
        if result.error:
            raise RuntimeError(f"training {variant} failed: {result.error}")
        summary = _record_success(store, base_row, result, version_dir, cfg, time.perf_counter() - t0)
    except BaseException as exc:
        store.append("runs", [{**base_row, "status": "failed", "ended_at": _now(), "updated_at": _now(),
                               "wall_seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}"}])
        raise
    return summary


def _record_success(store: ArtifactStore, base_row: dict, result: Any, version_dir: Path, cfg: PipelineConfig,
                    wall: float) -> dict[str, Any]:
    """Evaluate the best checkpoint, write plots/report next to the tables, append every table's rows."""
    from senet_dist.evaluate import evaluate_checkpoint
    from senet_dist.plots import plot_confusion_matrix, plot_curves

    run_id = base_row["run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        best = _local_checkpoint(result.best_checkpoint, out / "best")
        report = evaluate_checkpoint(best, version_dir, run_id=run_id)
        report.variant, report.dataset_version = base_row["variant"], base_row["dataset_version"]
        plot_confusion_matrix(report.confusion_matrix, report.classes, out / "reports" / "confusion_matrix.png")
        plot_curves(result.history, out / "reports" / "curves.png")
        (out / "reports" / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
        reports_uri = join(cfg.artifacts_abs, "reports", run_id)
        upload_dir(out / "reports", reports_uri)
    _append_new(store, "epochs", run_id, [{"run_id": run_id, **_epoch_row(m)} for m in result.history], "epoch")
    _append_new(store, "checkpoints", run_id, checkpoint_rows(run_id, result.checkpoints), "uri")
    store.append("evaluations", [{**report.to_dict(), "split": report.split}])
    ended = _now()
    store.append("runs", [{**base_row, "status": "completed", "ended_at": ended, "updated_at": ended,
                           "best_checkpoint_uri": str(result.best_checkpoint), "num_params": result.num_params,
                           "epochs_completed": result.epochs_completed, "wall_seconds": wall}])
    return {"variant": base_row["variant"], "run_id": run_id, "accuracy": report.accuracy, "macro_f1": report.macro_f1,
            "params": result.num_params, "img_per_s": round(report.img_per_s, 1), "epochs": result.epochs_completed,
            "wall_seconds": round(wall, 1), "reports": reports_uri,
            "confusion_matrix": report.confusion_matrix.astype(int).tolist(), "class_names": report.classes}


def _append_new(store: ArtifactStore, table: str, run_id: str, rows: list[dict[str, Any]], key: str) -> None:
    """Append only rows this run has not recorded yet, so a retried task never duplicates epochs or checkpoints."""
    seen = set(store.read(table, filter=pc.field("run_id") == run_id).column(key).to_pylist())
    fresh = [r for r in rows if r[key] not in seen]
    if fresh:
        store.append(table, fresh)


def _local_checkpoint(uri: str, scratch: Path) -> Path:
    """Checkpoints on object storage are downloaded for evaluation; local ones are used in place."""
    if is_local(uri):
        return Path(uri)
    download_dir(uri, scratch)
    return scratch


def checkpoint_rows(run_id: str, checkpoints: list[str]) -> list[dict[str, Any]]:
    """The checkpoint index: one row per kept checkpoint with its epoch, val_acc, total bytes and weights' sha256."""
    rows = []
    for uri in checkpoints:
        meta = json.loads(read_bytes(join(uri, META_FILE)))
        weights = read_bytes(join(uri, CHECKPOINT_FILE))
        rows.append({"run_id": run_id, "epoch": int(meta["epoch"]), "uri": str(uri),
                     "val_acc": meta.get("metrics", {}).get("val_acc"), "bytes": tree_bytes(uri),
                     "sha256": hashlib.sha256(weights).hexdigest()})
    return rows


_EPOCH_KEYS = {"epoch": "epoch", "train_loss": "train_loss", "train_acc": "train_acc", "val_loss": "val_loss",
               "val_acc": "val_acc", "lr": "lr", "img_per_s": "img_per_s", "epoch_seconds": "epoch_s"}


def _epoch_row(metrics: dict[str, Any]) -> dict[str, Any]:
    return {column: metrics.get(key) for column, key in _EPOCH_KEYS.items()}


def _now() -> datetime:
    return datetime.now(timezone.utc)
