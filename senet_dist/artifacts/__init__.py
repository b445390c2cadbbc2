"""Append-only Arrow/Parquet tables for datasets, runs, epochs, evaluations, checkpoints and released models.

``tables`` declares each table once (:class:`TableSpec` in :data:`TABLES`); ``store`` validates rows against
those declarations and writes/reads them (:class:`ArtifactStore`). Import from here: the names below are the API.
"""

from senet_dist.artifacts.store import ArtifactStore, ArtifactStoreError, dataset_row, to_json, to_table, utcnow
from senet_dist.artifacts.tables import (
    MODEL_STAGES,
    PER_CLASS,
    RUN_STATUSES,
    TABLES,
    TS,
    Row,
    SchemaError,
    TableSpec,
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
    "SchemaError",
    "TableSpec",
    "dataset_row",
    "table_spec",
    "to_json",
    "to_table",
    "utcnow",
]
