"""Every table, declared once: a :class:`TableSpec` per table in :data:`TABLES`, with the constructor of its rows
beside it (:func:`dataset_row`, :class:`RunRow`, :func:`epoch_row`, :func:`checkpoint_row`; an ``evaluations`` row is
``EvalReport.to_dict()``, a ``models`` row ``ModelRecord.event()``).

Validation, reading and "latest row" (``senet_dist.artifacts.store``) all read that one declaration. Columns are
only ever added, and nullable: parts written before a column existed read back with nulls there (the reader
projects every part onto the current schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import pyarrow as pa

from senet_dist.errors import PermanentError

TS = pa.timestamp("us", tz="UTC")
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
MODEL_STAGES = ("champion", "challenger", "archived")
PER_CLASS = pa.struct(
    [
        ("class_name", pa.string()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("support", pa.int64()),
    ]
)

Row = Mapping[str, Any]


class SchemaError(PermanentError, ValueError):
    """A row does not match its table's schema; the message names the table, row and column."""


@dataclass(frozen=True)
class TableSpec:
    """Everything about one table: its columns, the column stamped "now" on append, and its own rules."""

    name: str
    schema: pa.Schema
    auto_column: str  # defaults to now on append; orders events for latest()
    description: str
    derive: Callable[[Row], Row] | None = None  # fills derivable columns of a row before validation
    checks: tuple[Callable[[pa.Table], None], ...] = ()  # value rules beyond types; raise SchemaError


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


def _derive_dataset_counts(row: Row) -> Row:
    """Rows may give ``counts_json`` (dataset.json's ``{split: n}``) and ``classes`` only; fill the per-split
    count columns and ``num_classes`` from them so SQL engines can query plain ints."""
    out = dict(row)
    if isinstance(out.get("counts_json"), str):
        try:
            counts = json.loads(out["counts_json"])
        except json.JSONDecodeError as exc:
            raise SchemaError(f"table 'datasets': column 'counts_json' is not valid JSON: {exc}") from None
        for split in ("train", "val", "test"):
            out.setdefault(f"{split}_count", counts.get(split, 0) if isinstance(counts, dict) else None)
    if isinstance(out.get("classes"), (list, tuple)):
        out.setdefault("num_classes", len(out["classes"]))
    return out


def _check_run_status(table: pa.Table) -> None:
    bad = [s for s in table["status"].to_pylist() if s not in RUN_STATUSES]
    if bad:
        raise SchemaError(f"table 'runs': column 'status' must be one of {RUN_STATUSES}, got {bad[0]!r}")


def _check_model_stage(table: pa.Table) -> None:
    bad = [s for s in table["stage"].to_pylist() if s not in MODEL_STAGES]
    if bad:
        raise SchemaError(f"table 'models': column 'stage' must be one of {MODEL_STAGES}, got {bad[0]!r}")


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "datasets",
            pa.schema(
                [
                    _f("version", pa.string(), False),
                    _f("fingerprint", pa.string(), False),
                    _f("source", pa.string()),
                    _f("uri", pa.string()),
                    _f("classes", pa.list_(pa.string())),
                    _f("num_classes", pa.int64()),
                    _f("train_count", pa.int64()),
                    _f("val_count", pa.int64()),
                    _f("test_count", pa.int64()),
                    _f("num_rejected", pa.int64()),
                    _f("counts_json", pa.string()),
                    _f("created_at", TS, False),
                ]
            ),
            "created_at",
            "One row per sharded dataset version: where it is, its classes and split sizes.",
            derive=_derive_dataset_counts,
        ),
        TableSpec(
            "runs",
            pa.schema(
                [
                    _f("run_id", pa.string(), False),
                    _f("flow_run_id", pa.string()),
                    _f("variant", pa.string()),
                    _f("config_json", pa.string()),
                    _f("config_yaml", pa.string()),
                    _f("dataset_version", pa.string()),
                    _f("dataset_fingerprint", pa.string()),
                    _f("status", pa.string(), False),
                    _f("started_at", TS),
                    _f("ended_at", TS),
                    _f("best_checkpoint_uri", pa.string()),
                    _f("num_params", pa.int64()),
                    _f("epochs_completed", pa.int64()),
                    _f("wall_seconds", pa.float64()),
                    _f("error", pa.string()),
                    _f("updated_at", TS, False),
                ]
            ),
            "updated_at",
            "Training run events; the newest row per run_id is the run's state (runs_latest).",
            checks=(_check_run_status,),
        ),
        TableSpec(
            "epochs",
            pa.schema(
                [
                    _f("run_id", pa.string(), False),
                    _f("epoch", pa.int64(), False),
                    _f("train_loss", pa.float64()),
                    _f("train_acc", pa.float64()),
                    _f("val_loss", pa.float64()),
                    _f("val_acc", pa.float64()),
                    _f("lr", pa.float64()),
                    _f("img_per_s", pa.float64()),
                    _f("epoch_seconds", pa.float64()),
                    _f("ema_val_loss", pa.float64()),  # null when the run kept no EMA of its weights
                    _f("ema_val_acc", pa.float64()),
                    _f("created_at", TS, False),
                ]
            ),
            "created_at",
            "Per-epoch training metrics of a run.",
        ),
        TableSpec(
            "evaluations",
            pa.schema(
                [
                    _f("run_id", pa.string(), False),
                    _f("variant", pa.string()),
                    _f("dataset_version", pa.string()),
                    _f("split", pa.string()),
                    _f("accuracy", pa.float64(), False),
                    _f("macro_precision", pa.float64()),
                    _f("macro_recall", pa.float64()),
                    _f("macro_f1", pa.float64()),
                    _f("weighted_precision", pa.float64()),
                    _f("weighted_recall", pa.float64()),
                    _f("weighted_f1", pa.float64()),
                    _f("top_k", pa.int64()),
                    _f("top_k_accuracy", pa.float64()),
                    _f("per_class", pa.list_(PER_CLASS)),
                    _f("confusion_matrix", pa.list_(pa.list_(pa.int64()))),
                    _f("latency_ms_per_image", pa.float64()),
                    _f("img_per_s", pa.float64()),
                    _f("weights", pa.string()),  # which weights were scored: model or ema (null: before EMA existed)
                    _f("report_json", pa.string()),
                    _f("created_at", TS, False),
                ]
            ),
            "created_at",
            "Evaluations of a run's best checkpoint on a split: metrics, confusion matrix, latency.",
        ),
        TableSpec(
            "checkpoints",
            pa.schema(
                [
                    _f("run_id", pa.string(), False),
                    _f("epoch", pa.int64(), False),
                    _f("uri", pa.string(), False),
                    _f("val_acc", pa.float64()),
                    _f("bytes", pa.int64()),
                    _f("sha256", pa.string()),
                    _f("created_at", TS, False),
                ]
            ),
            "created_at",
            "Checkpoints kept by a run: where each lives and its validation accuracy.",
        ),
        TableSpec(
            "models",
            pa.schema(
                [
                    _f("event_id", pa.string(), False),  # breaks ties between events of the same microsecond
                    _f("model_id", pa.string(), False),
                    _f("dataset", pa.string(), False),  # the dataset name a champion is kept for
                    _f("stage", pa.string(), False),
                    _f("action", pa.string()),  # gate, promote, rollback, reevaluate, export
                    _f("variant", pa.string()),
                    _f("run_id", pa.string()),
                    _f("dataset_version", pa.string()),  # trained on
                    _f("dataset_fingerprint", pa.string()),
                    _f("eval_dataset_version", pa.string()),  # the test split the metrics were measured on
                    _f("accuracy", pa.float64()),
                    _f("macro_f1", pa.float64()),
                    _f("metrics_json", pa.string()),
                    _f("checkpoint_uri", pa.string()),
                    _f("export_uris", pa.list_(pa.string())),
                    _f("export_sha256", pa.list_(pa.string())),  # each export's model file digest ("": unknown)
                    _f("promoted_at", TS),
                    _f("reason", pa.string()),
                    _f("created_at", TS, False),
                ]
            ),
            "created_at",
            "Released-model events (senet_dist.release.registry): the newest row per model_id is its stage.",
            checks=(_check_model_stage,),
        ),
    )
}


def table_spec(name: str) -> TableSpec:
    """The spec of table ``name``; an unknown name lists the valid ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}") from None


# ---- row constructors, one per table ---------------------------------------------------------------------------
def column_names(table: str) -> list[str]:
    return table_spec(table).schema.names


def dataset_row(
    version: str,
    fingerprint: str,
    classes: Sequence[str],
    counts: Mapping[str, int],
    *,
    source: str | None = None,
    uri: str | None = None,
    num_rejected: int = 0,
) -> dict[str, Any]:
    """A ``datasets`` row from a ``dataset.json``'s fields (``counts`` is ``{split: n}``)."""
    unknown = sorted(set(counts) - {"train", "val", "test"})
    if unknown:
        raise SchemaError(f"table 'datasets': unknown split(s) {unknown} in counts")
    return {
        "version": version,
        "fingerprint": fingerprint,
        "source": source,
        "uri": uri,
        "classes": list(classes),
        "num_classes": len(classes),
        "num_rejected": num_rejected,
        "counts_json": json.dumps(dict(counts), sort_keys=True),
        **{f"{s}_count": int(counts.get(s, 0)) for s in ("train", "val", "test")},
    }


@dataclass(frozen=True)
class RunRow:
    """A ``runs`` event: a run's identity (set when it starts) and its state; ``then(...)`` gives the next event of
    the same run (``running`` -> ``completed`` / ``failed``). Its fields are the table's columns (a test holds them
    to the schema); ``updated_at`` None means the table's "now"."""

    run_id: str
    status: str
    flow_run_id: str | None = None
    variant: str | None = None
    config_json: str | None = None
    config_yaml: str | None = None
    dataset_version: str | None = None
    dataset_fingerprint: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    best_checkpoint_uri: str | None = None
    num_params: int | None = None
    epochs_completed: int | None = None
    wall_seconds: float | None = None
    error: str | None = None
    updated_at: datetime | None = None

    def then(self, **changes: Any) -> RunRow:
        return replace(self, **changes)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def epoch_row(run_id: str, metrics: object) -> dict[str, Any]:
    """An ``epochs`` row: every column but the key and the timestamp is the metrics' attribute of the same name
    (``train.results.EpochMetrics``), so the table and the metrics share one set of names."""
    return {"run_id": run_id} | {
        c: getattr(metrics, c) for c in column_names("epochs") if c not in ("run_id", "created_at")
    }


def checkpoint_row(
    run_id: str, epoch: int, uri: str, *, val_acc: float | None, size: int, sha256: str
) -> dict[str, Any]:
    """A ``checkpoints`` row: one kept checkpoint, where it lives, what it scored and its weights' digest."""
    return {"run_id": run_id, "epoch": epoch, "uri": uri, "val_acc": val_acc, "bytes": size, "sha256": sha256}
