"""senet_dist.artifacts: schemas, atomic append-only parts, run events, failures, local and S3 roots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from senet_dist.artifacts import (
    TABLES,
    ArtifactStore,
    ArtifactStoreError,
    SchemaError,
    dataset_row,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Appends N runs from a separate interpreter; argv: root, writer id, count.
WRITER = textwrap.dedent("""
    import sys
    from senet_dist.artifacts import ArtifactStore
    store = ArtifactStore(sys.argv[1])
    for i in range(int(sys.argv[3])):
        store.append("runs", [{"run_id": f"w{sys.argv[2]}-{i}", "status": "running", "num_params": i}])
        store.append("epochs", [{"run_id": f"w{sys.argv[2]}-{i}", "epoch": e, "val_acc": 0.1 * e} for e in range(3)])
""")


def _run(run_id: str, status: str = "running", **kw: object) -> dict[str, object]:
    return {"run_id": run_id, "variant": "se_resnet_tiny", "status": status, **kw}


def _spawn_writers(root: str, n_procs: int, per_proc: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", WRITER, root, str(w), str(per_proc)], stderr=subprocess.PIPE)
        for w in range(n_procs)
    ]


def _wait_ok(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()


def test_empty_read_has_schema(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "never-written")
    for name, spec in TABLES.items():
        table = store.read(name)
        assert table.num_rows == 0 and table.schema == spec.schema
        assert spec.name == name and spec.auto_column in spec.schema.names and spec.description
    assert store.runs_latest().num_rows == 0
    assert store.latest("runs", "run_id", "x") is None
    with pytest.raises(ValueError, match="unknown table 'rnus'.*runs"):
        store.read("rnus")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"run_id": "r", "status": "running", "num_params": "many"}], r"row 0: column 'num_params' expects int64"),
        ([_run("a"), {"run_id": None, "status": "running"}], r"row 1: column 'run_id' is required"),
        ([{"run_id": "r"}], r"column 'status' is required"),
        ([_run("r", started=T0)], r"unknown column\(s\) \['started'\]"),
        ([_run("r", "finished")], r"column 'status' must be one of"),
        ([_run("r", started_at=12.5)], r"column 'started_at' expects timestamp"),
        ([_run("r", started_at="yesterday")], r"column 'started_at' expects timestamp.*ISO-8601"),
        ([], r"0 rows"),
        ({"run_id": "r"}, r"list of dicts"),
    ],
)
def test_schema_validation_names_the_column(tmp_path: Path, rows: object, match: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(SchemaError, match=match):
        store.append("runs", rows)  # type: ignore[arg-type]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_nested_evaluation_row_round_trips(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    row = {
        "run_id": "r1",
        "variant": "v",
        "accuracy": 0.75,
        "macro_f1": 0.7,
        "top_k": 5,
        "top_k_accuracy": None,
        "per_class": [
            {"class_name": "cat", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
            {"class_name": "dog", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        ],
        "confusion_matrix": [[1, 1], [0, 1]],
        "report_json": "{}",
    }
    store.append("evaluations", [row])
    (got,) = store.read("evaluations").to_pylist()
    assert {k: got[k] for k in row} == row
    assert got["created_at"].tzinfo is not None
    with pytest.raises(SchemaError, match="'confusion_matrix' expects list<item: list<item: int64>>"):
        store.append("evaluations", [{**row, "confusion_matrix": [["x"]]}])


def test_append_writes_one_new_part_per_call_and_accepts_arrow(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    first = store.append("checkpoints", [{"run_id": "r", "epoch": 0, "uri": "/c0", "bytes": 10}])
    arrow = pa.table({"run_id": ["r", "r"], "epoch": [1, 2], "uri": ["/c1", "/c2"]})
    second = store.append("checkpoints", arrow)
    parts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert first != second and parts == sorted([Path(first).name, Path(second).name])
    assert all(p.startswith("part-") and p.endswith(".parquet") for p in parts)
    # stray temp/hidden files (a writer that died mid-write) are not read
    (tmp_path / "checkpoints" / ".part-x.parquet.tmp").write_bytes(b"PAR1 torn")
    (tmp_path / "checkpoints" / "_SUCCESS").write_bytes(b"")
    table = store.read("checkpoints", filter=pc.field("epoch") >= 1)
    assert sorted(table["uri"].to_pylist()) == ["/c1", "/c2"]
    assert store.latest("checkpoints", "run_id", "r")["epoch"] in (1, 2)


def test_runs_latest_is_newest_event_per_run(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.append("runs", [_run("a", started_at=T0, updated_at=T0), _run("b", updated_at=T0)])
    store.append("runs", [_run("a", "completed", ended_at=T0 + timedelta(hours=1), updated_at=T0 + timedelta(hours=1))])
    store.append("runs", [_run("b", "pending", updated_at=T0 - timedelta(hours=1))])  # older event written later
    latest = {r["run_id"]: r for r in store.runs_latest().to_pylist()}
    assert {k: latest[k]["status"] for k in latest} == {"a": "completed", "b": "running"}
    assert store.latest("runs", "run_id", "a")["status"] == "completed"
    assert store.read("runs").num_rows == 4  # nothing rewritten
    with pytest.raises(ValueError, match="no column .runid."):
        store.latest("runs", "runid", "b")


def test_parts_written_before_a_column_existed_still_read(tmp_path: Path) -> None:
    """Columns are only added (nullable): an old part reads back with nulls in the new column."""
    store = ArtifactStore(tmp_path)
    new = TABLES["runs"].schema
    old = pa.schema([f for f in new if f.name != "config_yaml"])
    old_row = {"run_id": "old", "status": "completed", "config_json": "{}", "updated_at": T0}
    (tmp_path / "runs").mkdir()
    pq.write_table(pa.Table.from_pylist([old_row], schema=old), tmp_path / "runs" / "part-old.parquet")
    store.append("runs", [_run("new", config_yaml="epochs: 2\n", updated_at=T0 + timedelta(hours=1))])
    runs = store.read("runs")
    assert runs.schema == new
    rows = {r["run_id"]: r for r in runs.to_pylist()}
    assert rows["old"]["config_yaml"] is None and rows["old"]["config_json"] == "{}"
    assert rows["new"]["config_yaml"] == "epochs: 2\n"
    assert store.latest("runs", "run_id", "old")["status"] == "completed"
    assert store.runs_latest().num_rows == 2


def test_dataset_row_helper(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.append(
        "datasets", [dataset_row("v0001-abc", "abc" * 8, ["cat", "dog"], {"train": 8, "test": 2}, source="/data/img")]
    )
    (got,) = store.read("datasets").to_pylist()
    assert (got["num_classes"], got["train_count"], got["val_count"], got["test_count"]) == (2, 8, 0, 2)
    assert json.loads(got["counts_json"]) == {"train": 8, "test": 2}
    with pytest.raises(SchemaError, match="holdout"):
        dataset_row("v", "f", ["a"], {"holdout": 1})
    # dataset.json style: counts as JSON only -> the int columns are derived
    store.append(
        "datasets",
        [
            {
                "version": "v0002-def",
                "fingerprint": "def",
                "classes": ["a", "b", "c"],
                "counts_json": json.dumps({"train": 5, "val": 1, "test": 1}),
            }
        ],
    )
    row = store.latest("datasets", "version", "v0002-def")
    assert (row["num_classes"], row["train_count"], row["val_count"], row["test_count"]) == (3, 5, 1, 1)
    with pytest.raises(SchemaError, match="counts_json.*not valid JSON"):
        store.append("datasets", [{"version": "v", "fingerprint": "f", "counts_json": "{train: 1"}])


def test_concurrent_appends_from_processes_never_tear(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    n_procs, per_proc = 4, 6
    procs = _spawn_writers(root, n_procs, per_proc)
    seen = 0
    while any(p.poll() is None for p in procs):  # a reader racing the writers always sees whole parts
        n = store.read("runs").num_rows
        assert n >= seen
        seen = n
    _wait_ok(procs)
    runs = store.read("runs")
    assert sorted(runs["run_id"].to_pylist()) == sorted(f"w{w}-{i}" for w in range(n_procs) for i in range(per_proc))
    assert store.read("epochs").num_rows == n_procs * per_proc * 3
    assert len(list((tmp_path / "store" / "runs").iterdir())) == n_procs * per_proc  # no temp files left


def test_tables_open_in_other_engines(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.append("runs", [_run("a", num_params=7)])
    store.append("runs", [_run("b", num_params=9)])
    pd = pytest.importorskip("pandas")
    assert sorted(pd.read_parquet(tmp_path / "runs")["num_params"].tolist()) == [7, 9]
    duckdb = pytest.importorskip("duckdb")
    total = duckdb.sql(f"SELECT sum(num_params) FROM read_parquet('{tmp_path}/runs/*.parquet')").fetchall()
    assert total == [(16,)]


def test_root_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    root = str(tmp_path / "afile" / "store")
    with pytest.raises(ArtifactStoreError, match=re.escape(root) + ".*cannot append to 'runs'"):
        ArtifactStore(root).append("runs", [_run("a")])


def test_failed_append_keeps_previous_parts(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.append("runs", [_run("a")])
    store.append("epochs", [{"run_id": "a", "epoch": 0}])
    before = sorted((tmp_path / "epochs").iterdir())
    # the table directory is unusable (a regular file where a part would go)
    (tmp_path / "checkpoints").write_text("blocked")
    with pytest.raises(ArtifactStoreError, match="cannot append to 'checkpoints'"):
        store.append("checkpoints", [{"run_id": "a", "epoch": 0, "uri": "/c"}])
    # a write that fails part-way (file size limit -> EFBIG, as on a full disk) leaves no torn part
    script = textwrap.dedent("""
        import resource, signal, sys
        from senet_dist.artifacts import ArtifactStore, ArtifactStoreError
        store = ArtifactStore(sys.argv[1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        try:
            store.append("epochs", [{"run_id": "a", "epoch": e, "lr": 0.1} for e in range(1, 200)])
        except ArtifactStoreError as exc:
            print(exc)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert str(tmp_path) in proc.stdout and "cannot append to 'epochs'" in proc.stdout
    assert sorted((tmp_path / "epochs").iterdir()) == before
    assert store.read("epochs").num_rows == 1 and store.read("runs").num_rows == 1


def test_s3_root_round_trip_with_concurrent_writers(s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/artifacts/prod"
    store = ArtifactStore(root)
    assert store.read("runs").num_rows == 0
    procs = _spawn_writers(root, 2, 3)  # two processes ...
    threads = [
        threading.Thread(target=lambda t=t: [store.append("runs", [_run(f"t{t}-{i}")]) for i in range(3)])
        for t in range(2)
    ]  # ... and two threads sharing one store
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _wait_ok(procs)
    ids = sorted(store.read("runs")["run_id"].to_pylist())
    assert ids == sorted(
        [f"w{w}-{i}" for w in range(2) for i in range(3)] + [f"t{t}-{i}" for t in range(2) for i in range(3)]
    )
    assert store.read("epochs").num_rows == 2 * 3 * 3
    path = store.append("runs", [_run("t0-0", "completed")])
    assert path.startswith(f"{root}/runs/part-")
    assert {r["run_id"]: r["status"] for r in store.runs_latest().to_pylist()}["t0-0"] == "completed"


def test_s3_missing_bucket_is_a_clear_error(s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}-missing/prefix"
    with pytest.raises(ArtifactStoreError, match=re.escape(root) + ".*cannot append"):
        ArtifactStore(root).append("runs", [_run("a")])


def test_each_row_constructor_writes_its_tables_columns(tmp_path: Path) -> None:
    """The constructors beside the specs name exactly their table's columns: RunRow's fields are the runs schema,
    an epochs row is the metrics' own attribute names, a checkpoints row fills every column but the timestamp."""
    from dataclasses import fields

    from senet_dist.artifacts import RunRow, checkpoint_row, column_names, epoch_row, utcnow
    from tests.helpers import epoch_metrics

    assert sorted(f.name for f in fields(RunRow)) == sorted(column_names("runs"))
    row = epoch_row("r", epoch_metrics(epoch=3, val_acc=0.75))
    assert sorted(row) == sorted(c for c in column_names("epochs") if c != "created_at")
    assert row["epoch"] == 3 and row["val_acc"] == 0.75
    ckpt = checkpoint_row("r", 3, "s3://b/c", val_acc=0.75, size=10, sha256="ab")
    assert sorted(ckpt) == sorted(c for c in column_names("checkpoints") if c != "created_at")
    store = ArtifactStore(tmp_path / "a")
    running = RunRow(run_id="r", status="running", variant="v", updated_at=utcnow())
    store.append("runs", [running.row()])
    store.append("runs", [running.then(status="completed", epochs_completed=3, updated_at=utcnow()).row()])
    store.append("epochs", [row])
    store.append("checkpoints", [ckpt])
    assert store.runs_latest().to_pylist()[0]["status"] == "completed"
