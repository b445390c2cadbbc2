"""The model registry: the append-only ``models`` table of stage events, one champion per dataset, what each model
measured, and the changes to it.

A model is a completed run's best checkpoint; its id is the run id. Every change (the gate's decision, a person's
promotion or rollback, a re-evaluation, an export) appends new rows and never rewrites one; the newest row per
``model_id`` (``created_at``, then ``event_id``) is the model's state. Changes are made under the dataset's registry
lock (:mod:`~senet_dist.release.lock`); a promotion writes the new champion's row and the old champion's
``archived`` row in ONE Parquet part, so no reader sees one without the other.

Readers never see two champions of a dataset even if the lock was bypassed (a filesystem without one, a
crash between two appends): :func:`states` keeps the most recently promoted champion, ordered by
(``promoted_at``, ``event_id``), and shows any other as ``archived`` ("superseded"). Every reader applies
the same rule to the same rows, so they all agree.

A record's numbers are its test metrics on a dataset version (:func:`test_metrics`): the ``evaluations`` table's
when the pipeline recorded them, else a new evaluation of its checkpoint (a champion trained on an older version is
measured on the new one before the gate compares; an export puts them in ``model.json``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.errors import PermanentError
from senet_dist.release.lock import registry_lock

if TYPE_CHECKING:
    from senet_dist.train.checkpoint import LoadedModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, ARCHIVED = "champion", "challenger", "archived"
TABLE = "models"


class RegistryError(PermanentError, ValueError):
    """A registry request that cannot be honoured (unknown model, nothing to roll back to...)."""


class IncompatibleModel(PermanentError, ValueError):
    """A model cannot be evaluated on a dataset version (its classes differ)."""


@dataclass(frozen=True)
class ModelRecord:
    """One row of the ``models`` table; as returned by :func:`states`, a model's current state."""

    model_id: str
    dataset: str
    stage: str
    variant: str | None = None
    run_id: str | None = None
    dataset_version: str | None = None
    dataset_fingerprint: str | None = None
    eval_dataset_version: str | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    metrics_json: str | None = None
    checkpoint_uri: str | None = None
    export_uris: tuple[str, ...] = ()
    export_sha256: tuple[str, ...] = ()  # the model file's digest of each export, in export_uris' order
    promoted_at: datetime | None = None
    reason: str | None = None
    action: str | None = None
    event_id: str = ""
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelRecord:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        values["export_uris"] = tuple(values.get("export_uris") or ())
        values["export_sha256"] = tuple(values.get("export_sha256") or ())
        return cls(**values)

    def event(self, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """A new event row for this model: its current fields, ``changes`` applied, a fresh ``event_id``."""
        row = asdict(replace(self, **changes))
        row["export_uris"] = list(row["export_uris"])
        row["export_sha256"] = list(row["export_sha256"])
        row["event_id"] = uuid.uuid4().hex
        row["created_at"] = at  # None: the table's "now"
        return row

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_json) if self.metrics_json else {}

    def digest_of(self, uri: str) -> str | None:
        """The sha256 the registry recorded for the model file of export ``uri`` (None: recorded before digests)."""
        if len(self.export_sha256) != len(self.export_uris):
            return None
        return dict(zip(self.export_uris, self.export_sha256, strict=True)).get(uri) or None

    def export_for(self, fmt: str | None = None) -> str | None:
        """The newest export URI (of format ``fmt`` when given: the directory name ``torchscript``/``onnx``)."""
        for uri in reversed(self.export_uris):
            if fmt is None or uri.rstrip("/").rsplit("/", 1)[-1] == fmt:
                return uri
        return None


def _order(r: ModelRecord) -> tuple[datetime, str]:
    assert r.created_at is not None
    return r.created_at, r.event_id


def events(store: ArtifactStore, dataset: str | None = None) -> list[ModelRecord]:
    """Every event (of ``dataset``), oldest first."""
    table = store.read(TABLE, filter=None if dataset is None else pc.field("dataset") == dataset)
    return sorted((ModelRecord.from_row(r) for r in table.to_pylist()), key=_order)


def states(store: ArtifactStore, dataset: str | None = None) -> dict[str, ModelRecord]:
    """Each model's current state (the newest event per model id), with at most one champion per dataset."""
    latest: dict[str, ModelRecord] = {}
    for ev in events(store, dataset):
        latest[ev.model_id] = ev  # oldest first: the last one wins
    return one_champion_each(latest)


def one_champion_each(latest: dict[str, ModelRecord]) -> dict[str, ModelRecord]:
    """``latest`` with every dataset's champions but the most recently promoted one shown as archived (module doc)."""
    by_dataset: dict[str, list[ModelRecord]] = {}
    for rec in latest.values():
        if rec.stage == CHAMPION:
            by_dataset.setdefault(rec.dataset, []).append(rec)
    for champs in by_dataset.values():
        if len(champs) < 2:
            continue
        winner = max(champs, key=lambda r: (r.promoted_at or r.created_at, r.event_id))
        for rec in champs:
            if rec is not winner:
                latest[rec.model_id] = replace(
                    rec,
                    stage=ARCHIVED,
                    promoted_at=None,
                    reason=f"superseded by {winner.model_id} (concurrent promotion)",
                )
    return latest


def champion(store: ArtifactStore, dataset: str) -> ModelRecord | None:
    """The dataset's champion, or None."""
    return champion_of(states(store, dataset))


def champion_of(current: dict[str, ModelRecord]) -> ModelRecord | None:
    """The champion among states that :func:`one_champion_each` has made unique, or None."""
    found = [r for r in current.values() if r.stage == CHAMPION]
    return found[0] if found else None


def get(store: ArtifactStore, model_id: str) -> ModelRecord:
    """A registered model's state; an unknown id raises :class:`RegistryError` naming some known ones."""
    current = states(store)
    if model_id in current:
        return current[model_id]
    known = ", ".join(sorted(current)[:10]) or "none"
    raise RegistryError(f"no registered model {model_id!r} in {store.root} (registered: {known})")


def find(store: ArtifactStore, model_id: str) -> ModelRecord | None:
    return states(store).get(model_id)


def append_events(store: ArtifactStore, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` as one part (callers hold the dataset's lock and ``fence()`` it first)."""
    store.append(TABLE, list(rows))


# ---- changes ------------------------------------------------------------------------------------------------
def candidate(store: ArtifactStore, run_id: str, dataset: str) -> ModelRecord:
    """An unwritten ``challenger`` record of a completed run: its best checkpoint and its test metrics on the data
    it was trained on (from the ``evaluations`` table, when the pipeline recorded them)."""
    runs = [r for r in store.runs_latest().to_pylist() if r["run_id"] == run_id]
    if not runs:
        raise RegistryError(f"no run {run_id!r} in {store.root} (runs table)")
    run = runs[0]
    if run["status"] != "completed" or not run["best_checkpoint_uri"]:
        raise RegistryError(f"run {run_id!r} is {run['status']}, not completed with a checkpoint; cannot register it")
    rec = ModelRecord(
        model_id=run_id,
        dataset=dataset,
        stage=CHALLENGER,
        variant=run["variant"],
        run_id=run_id,
        dataset_version=run["dataset_version"],
        dataset_fingerprint=run["dataset_fingerprint"],
        checkpoint_uri=run["best_checkpoint_uri"],
    )
    version = run["dataset_version"]
    evaluation = (
        (latest_evaluation(store, run_id, version) or latest_evaluation(store, run_id, version, "val"))
        if version
        else None
    )
    return with_metrics(rec, metrics_from_evaluation(evaluation)) if evaluation else rec


def register_run(store: ArtifactStore, run_id: str, dataset: str, *, reason: str = "registered") -> ModelRecord:
    """Register a completed run as a ``challenger`` of ``dataset`` (a no-op returning its state if registered)."""
    rec = candidate(store, run_id, dataset)
    with registry_lock(store, dataset) as lock:
        existing = states(store).get(run_id)
        if existing is not None:
            return existing
        row = rec.event(reason=reason, action="register")
        lock.fence()
        store.append(TABLE, [row])
    return ModelRecord.from_row(row)


def promote(store: ArtifactStore, model_id: str, reason: str, *, action: str = "promote") -> ModelRecord:
    """Make ``model_id`` its dataset's champion (a person's decision: no gate); the old champion is archived.

    Returns the new state. Promoting the current champion changes nothing."""
    if not reason.strip():
        raise RegistryError("a promotion needs a reason")
    dataset = get(store, model_id).dataset
    with registry_lock(store, dataset) as lock:
        current = states(store, dataset)
        rec = current.get(model_id)
        if rec is None:  # moved to another dataset? never: datasets are fixed at registration
            raise RegistryError(f"model {model_id!r} vanished from dataset {dataset!r}")
        old = champion_of(current)
        if old is not None and old.model_id == model_id:
            return rec
        now = utcnow()
        rows = [rec.event(at=now, stage=CHAMPION, promoted_at=now, reason=reason, action=action)]
        if old is not None:
            rows.append(
                old.event(
                    at=now, stage=ARCHIVED, promoted_at=None, reason=f"replaced by {model_id}: {reason}", action=action
                )
            )
        lock.fence()
        store.append(TABLE, rows)
    return ModelRecord.from_row(rows[0] | {"created_at": now})


def rollback(store: ArtifactStore, dataset: str, reason: str) -> tuple[ModelRecord, ModelRecord]:
    """Retire the dataset's champion and restore the one it replaced: ``(restored, retired)``.

    "The one it replaced" is the newest champion before the current one's promotion that is neither the current
    one nor a model retired by an earlier rollback, so repeated rollbacks walk further back in history."""
    if not reason.strip():
        raise RegistryError("a rollback needs a reason")
    with registry_lock(store, dataset) as lock:
        history = events(store, dataset)
        current = one_champion_each({r.model_id: r for r in history})  # newest per id (history is ordered)
        retired = champion_of(current)
        if retired is None:
            raise RegistryError(f"dataset {dataset!r} has no champion to roll back")
        start = retired.promoted_at or retired.created_at
        assert start is not None
        rolled_back = {m for m, r in current.items() if r.stage == ARCHIVED and r.action == "rollback"}
        earlier = [
            e
            for e in history
            if e.stage == CHAMPION
            and e.created_at is not None
            and e.created_at < start
            and e.model_id != retired.model_id
            and e.model_id not in rolled_back
        ]
        if not earlier:
            raise RegistryError(f"dataset {dataset!r}: no earlier champion than {retired.model_id} to roll back to")
        restored = current[earlier[-1].model_id]
        now = utcnow()
        rows = [
            restored.event(
                at=now,
                stage=CHAMPION,
                promoted_at=now,
                reason=f"rollback from {retired.model_id}: {reason}",
                action="rollback",
            ),
            retired.event(
                at=now,
                stage=ARCHIVED,
                promoted_at=None,
                reason=f"rolled back to {restored.model_id}: {reason}",
                action="rollback",
            ),
        ]
        lock.fence()
        store.append(TABLE, rows)
    return ModelRecord.from_row(rows[0] | {"created_at": now}), ModelRecord.from_row(rows[1] | {"created_at": now})


def record_export(store: ArtifactStore, model_id: str, uri: str, sha256: str | None = None) -> ModelRecord:
    """Add an export URI (and its model file's digest) to a registered model (stage and reason carried forward)."""
    dataset = get(store, model_id).dataset
    with registry_lock(store, dataset) as lock:
        rec = states(store, dataset)[model_id]
        if uri in rec.export_uris:
            return rec
        digests = rec.export_sha256 if len(rec.export_sha256) == len(rec.export_uris) else ("",) * len(rec.export_uris)
        row = rec.event(export_uris=(*rec.export_uris, uri), export_sha256=(*digests, sha256 or ""), action="export")
        lock.fence()
        store.append(TABLE, [row])
    return ModelRecord.from_row(row)


# ---- what a model measured -------------------------------------------------------------------------------
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
    checkpoint: str | None = None,
    loaded: LoadedModel | None = None,
    model_id: str | None = None,
    variant: str | None = None,
    record: bool = True,
    device: str = "auto",
) -> tuple[dict[str, Any], bool]:
    """``(metrics, evaluated_now)`` of a model on ``version_dir``'s test split (``val`` for a version sharded
    without one, as the pipeline reports it): ``run_id``'s recorded evaluation, or a new one of the model
    (``loaded``, else loaded from ``checkpoint``, a directory or URI). Raises :class:`IncompatibleModel` when the
    classes differ.

    The gate uses the defaults: the new evaluation is appended to ``evaluations`` (under ``run_id``, else
    ``model_id``) so the next gate reuses it. An export passes ``record=False`` (it only reads the tables, may have
    no store, and its checkpoint need not be a registered run), its loaded model and ``device="cpu"``."""
    from senet_dist.data import DatasetInfo
    from senet_dist.evaluation.metrics import evaluate_model, report_split
    from senet_dist.train.checkpoint import load_model, locate_checkpoint, read_meta_at

    info = DatasetInfo.load(version_dir)
    split = report_split(version_dir)
    if store is not None and run_id:
        row = latest_evaluation(store, run_id, info.version, split)
        if row is not None:
            return metrics_from_evaluation(row), False
    name = model_id or run_id
    if loaded is None:
        if not checkpoint:
            raise RegistryError(f"model {name} has no checkpoint to evaluate")
        located = locate_checkpoint(checkpoint)
        classes = read_meta_at(located).classes  # before any weights are downloaded
        if list(classes) != list(info.classes):
            raise IncompatibleModel(f"its classes {classes} differ from {info.version}'s {list(info.classes)}")
        loaded = load_model(located)
    elif list(loaded.meta.classes) != list(info.classes):
        raise IncompatibleModel(f"its classes {loaded.meta.classes} differ from {info.version}'s {list(info.classes)}")
    log.info("evaluating %s on %s/%s", name, info.version, split)
    report = evaluate_model(loaded, info.version_dir, split=split, device=device, run_id=run_id or model_id)
    if variant:
        report.variant = variant
    row = {**report.to_dict(), "split": split}
    if record and store is not None:
        store.append("evaluations", [row])
    return metrics_from_evaluation(row), True
