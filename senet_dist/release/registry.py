"""The model registry: the append-only ``models`` table of stage events, one champion per dataset.

A model is a completed run's best checkpoint; its id is the run id. Every change (the gate's decision, a
person's promotion or rollback, a re-evaluation, an export) appends new rows and never rewrites one; the newest
row per ``model_id`` (``created_at``, then ``event_id``) is the model's state. This module reads that state and
appends ready-made events (:func:`append_events`, the gate's); the changes themselves (register, promote, rollback,
record an export) are in :mod:`~senet_dist.release.promotion`.

Readers never see two champions of a dataset even if the lock was bypassed (a filesystem without one, a
crash between two appends): :func:`states` keeps the most recently promoted champion, ordered by
(``promoted_at``, ``event_id``), and shows any other as ``archived`` ("superseded"). Every reader applies
the same rule to the same rows, so they all agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from senet_dist.artifacts import ArtifactStore

CHAMPION, CHALLENGER, ARCHIVED = "champion", "challenger", "archived"
TABLE = "models"


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown model, nothing to roll back to...)."""


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
        return cls(**values)

    def event(self, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """A new event row for this model: its current fields, ``changes`` applied, a fresh ``event_id``."""
        row = asdict(replace(self, **changes))
        row["export_uris"] = list(row["export_uris"])
        row["event_id"] = uuid.uuid4().hex
        row["created_at"] = at  # None: the table's "now"
        return row

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_json) if self.metrics_json else {}

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
    """Write ``rows`` as one part (callers hold the dataset's lock)."""
    store.append(TABLE, list(rows))
