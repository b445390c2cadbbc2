"""Changes to the model registry (:mod:`~senet_dist.release.registry`): registering a completed run, a person's
promotion or rollback, recording an export. Each appends events under the dataset's registry lock
(:mod:`senet_dist.release.lock`), so decisions are serialised; a promotion writes the new champion's row and the old
champion's ``archived`` row in ONE Parquet part, so no reader sees one without the other.
"""

from __future__ import annotations

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.release.lock import registry_lock
from senet_dist.release.reevaluate import latest_evaluation, metrics_from_evaluation, with_metrics
from senet_dist.release.registry import (
    ARCHIVED,
    CHALLENGER,
    CHAMPION,
    TABLE,
    ModelRecord,
    RegistryError,
    champion_of,
    events,
    get,
    one_champion_each,
    states,
)


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


def record_export(store: ArtifactStore, model_id: str, uri: str) -> ModelRecord:
    """Add an export URI to a registered model (its stage and reason carried forward unchanged)."""
    dataset = get(store, model_id).dataset
    with registry_lock(store, dataset) as lock:
        rec = states(store, dataset)[model_id]
        if uri in rec.export_uris:
            return rec
        row = rec.event(export_uris=(*rec.export_uris, uri), action="export")
        lock.fence()
        store.append(TABLE, [row])
    return ModelRecord.from_row(row)
