"""Append-only Arrow/Parquet tables for datasets, runs, epochs, evaluations, checkpoints and released models.

``tables`` declares each table once (:class:`TableSpec` in :data:`TABLES`); ``store`` validates rows against
those declarations and writes/reads them (:class:`ArtifactStore`). Import from here: the names below are the API.
"""

from senet_dist.artifacts.store import ArtifactStore, ArtifactStoreError, to_json, to_table, utcnow
from senet_dist.artifacts.tables import (
    MODEL_STAGES,
    PER_CLASS,
    RUN_STATUSES,
    TABLES,
    TS,
    Row,
    RunRow,
    SchemaError,
    TableSpec,
    checkpoint_row,
    column_names,
    dataset_row,
    epoch_row,
    table_spec,
)

__all__ = [
    "MODEL_STAGES",
    "PER_CLASS",
    "RUN_STATUSES",
    "TABLES",
    "TS",
    "ArtifactStore",
    "ArtifactStoreError",
    "Row",
    "RunRow",
    "SchemaError",
    "TableSpec",
    "checkpoint_row",
    "column_names",
    "dataset_row",
    "epoch_row",
    "table_spec",
    "to_json",
    "to_table",
    "utcnow",
]
