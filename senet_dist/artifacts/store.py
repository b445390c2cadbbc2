"""Append-only Arrow/Parquet tables for datasets, runs, epochs, evaluations, checkpoints and released models.

Each :meth:`ArtifactStore.append` writes ONE new Parquet file ``<root>/<table>/part-<utc>-<uuid>.parquet``
and never rewrites an existing one, so concurrent flow runs or processes cannot tear a table: a local
file is written under a dot-prefixed temp name and ``os.replace``-d into place; an object store (S3)
publishes an object only when its upload completes. Readers ignore ``.``/``_`` prefixed names. A table
is a plain, hive-less directory of Parquet files, so DuckDB (``read_parquet('<root>/runs/*.parquet')``),
pandas and polars open it as is. Runs are events: a status change appends a row, and
:meth:`ArtifactStore.runs_latest` keeps the newest row (``updated_at``) per ``run_id``.

Tables are declared in ``senet_dist.artifacts.tables``; this module writes and reads them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from senet_dist.artifacts.tables import Row, SchemaError, table_spec
from senet_dist.errors import SenetError
from senet_dist.storage import redact, resolve_filesystem


class ArtifactStoreError(SenetError, RuntimeError):
    """The store's root cannot be written or read (permission, disk full, missing bucket...)."""


def utcnow() -> datetime:
    """The one "now" of the package: timezone-aware UTC, as every timestamp column stores."""
    return datetime.now(timezone.utc)


def _coerce(table: str, field: pa.Field, i: int, value: Any) -> Any:
    """Accept ISO strings for timestamps and treat naive datetimes as UTC; reject numbers (unit ambiguity)."""
    if value is None:
        if not field.nullable:
            raise SchemaError(f"table {table!r} row {i}: column {field.name!r} is required (got None)")
        return None
    if pa.types.is_timestamp(field.type):
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                pass
        if not isinstance(value, datetime):
            raise SchemaError(
                f"table {table!r} row {i}: column {field.name!r} expects {field.type} "
                f"(a datetime or ISO-8601 string), got {value!r} ({type(value).__name__})"
            )
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
    return value


def _column(table: str, field: pa.Field, values: list[Any]) -> pa.Array:
    values = [_coerce(table, field, i, v) for i, v in enumerate(values)]
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        for i, v in enumerate(values):  # find the offending row for the message
            try:
                pa.array([v], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
                raise SchemaError(
                    f"table {table!r} row {i}: column {field.name!r} expects {field.type}, "
                    f"got {v!r} ({type(v).__name__}): {exc}"
                ) from None
        raise


def to_table(name: str, rows: Sequence[Row] | pa.Table) -> pa.Table:
    """Validate ``rows`` (dicts or an Arrow table) against table ``name``'s spec and build the Arrow table.

    Missing nullable columns become nulls, the auto column (``created_at``/``updated_at``) defaults to now,
    unknown columns, missing required values and wrongly typed values raise :class:`SchemaError`.
    """
    spec = table_spec(name)
    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()
    if isinstance(rows, Mapping) or not all(isinstance(r, Mapping) for r in rows):
        raise SchemaError(f"table {name!r}: rows must be a list of dicts or a pyarrow.Table")
    if spec.derive is not None:
        rows = [spec.derive(r) for r in rows]
    names = spec.schema.names
    for i, row in enumerate(rows):
        extra = sorted(set(row) - set(names))
        if extra:
            raise SchemaError(f"table {name!r} row {i}: unknown column(s) {extra}; schema has {names}")
    now, cols = utcnow(), []
    for field in spec.schema:
        values = [r.get(field.name) for r in rows]
        if field.name == spec.auto_column:
            values = [now if v is None else v for v in values]
        cols.append(_column(name, field, values))
    table = pa.Table.from_arrays(cols, schema=spec.schema)
    for check in spec.checks:
        check(table)
    return table


class ArtifactStore:
    """Tables under ``root`` (a local directory or a ``pyarrow.fs`` URI such as ``s3://bucket/prefix``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        try:
            self.fs, self.base = resolve_filesystem(self.root)
        except (ValueError, OSError) as exc:
            raise ArtifactStoreError(f"artifact store {redact(self.root)!r}: {exc}") from exc
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({redact(self.root)!r})"

    def table_path(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{table_spec(name).name}"

    def append(self, name: str, rows: Sequence[Row] | pa.Table) -> str:
        """Validate and write ``rows`` as one new Parquet part; returns its path. Empty input is an error."""
        table = to_table(name, rows)
        if table.num_rows == 0:
            raise SchemaError(f"table {name!r}: nothing to append (0 rows)")
        directory = self.table_path(name)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        final = f"{directory}/part-{stamp}-{uuid.uuid4().hex}.parquet"
        try:
            if self._local:
                self._write_local(table, directory, final)
            else:
                if not isinstance(self.fs, pafs.S3FileSystem):
                    self.fs.create_dir(directory, recursive=True)
                buf = pa.BufferOutputStream()  # serialise first: the upload is then one write + close,
                pq.write_table(table, buf)  # and the object appears only when that upload completes
                with self.fs.open_output_stream(final) as out:
                    out.write(buf.getvalue())
        except OSError as exc:
            raise ArtifactStoreError(
                f"artifact store {redact(self.root)!r}: cannot append to {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return final if self._local else f"{self.root.rstrip('/')}/{name}/{final.rsplit('/', 1)[1]}"

    @staticmethod
    def _write_local(table: pa.Table, directory: str, final: str) -> None:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/.{os.path.basename(final)}.tmp"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def read(self, name: str, filter: pc.Expression | None = None) -> pa.Table:  # noqa: A002
        """All parts of table ``name`` as one table (empty, with the schema, when nothing was written)."""
        schema = table_spec(name).schema
        path = self.table_path(name)
        try:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return schema.empty_table()
            dataset = ds.dataset(path, schema=schema, format="parquet", filesystem=self.fs, ignore_prefixes=[".", "_"])
            return dataset.to_table(filter=filter)
        except OSError as exc:
            raise ArtifactStoreError(f"artifact store {redact(self.root)!r}: cannot read {name!r}: {exc}") from exc

    def latest(self, name: str, key: str, value: Any) -> dict[str, Any] | None:
        """Newest row (by the table's ``created_at``/``updated_at``) whose ``key`` equals ``value``, or None."""
        spec = table_spec(name)
        if key not in spec.schema.names:
            raise ValueError(f"table {name!r} has no column {key!r}")
        rows = self.read(name, filter=pc.field(key) == value)
        if rows.num_rows == 0:
            return None
        order = rows[spec.auto_column]
        idx = pc.indices_nonzero(pc.equal(order, pc.max(order)))
        return rows.take([idx[-1].as_py()]).to_pylist()[0]

    def runs_latest(self) -> pa.Table:
        """The newest event per ``run_id`` (max ``updated_at``), i.e. each run's current state."""
        runs = self.read("runs")
        if runs.num_rows == 0:
            return runs
        runs = runs.sort_by([("run_id", "ascending"), ("updated_at", "descending")])
        ids = runs["run_id"].to_pylist()
        keep = [i for i, rid in enumerate(ids) if i == 0 or ids[i - 1] != rid]
        return runs.take(keep)


def to_json(obj: Any) -> str:
    """Stable JSON for ``config_json``/``report_json`` columns (sorted keys, non-JSON values as str)."""
    return json.dumps(obj, sort_keys=True, default=str)
