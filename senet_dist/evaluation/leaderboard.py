"""Leaderboard across runs from the Arrow tables: one Arrow table, a text rendering, and a comparison PNG.

Built from the tables alone (not from a flow's in-memory results) so ``senet-dist report`` shows every
run ever recorded under an artifacts root, including runs from other flow runs and machines.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from senet_dist.artifacts import ArtifactStore
from senet_dist.evaluation.report import new_figure, save_png

LEADERBOARD_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("accuracy", pa.float64()),
        ("macro_f1", pa.float64()),
        ("params", pa.int64()),
        ("img_per_s", pa.float64()),
        ("train_img_per_s", pa.float64()),
        ("epochs", pa.int64()),
        ("wall_seconds", pa.float64()),
        ("dataset_version", pa.string()),
        ("status", pa.string()),
        ("run_id", pa.string()),
    ]
)


def _latest_by(rows: list[dict[str, Any]], key: str, order: str) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        cur = best.get(row[key])
        if cur is None or row[order] >= cur[order]:
            best[row[key]] = row
    return best


def _mean_train_throughput(store: ArtifactStore) -> dict[str, float]:
    per_run: dict[str, list[float]] = defaultdict(list)
    for row in store.read("epochs").select(["run_id", "img_per_s"]).to_pylist():
        if row["img_per_s"] is not None:
            per_run[row["run_id"]].append(row["img_per_s"])
    return {rid: sum(v) / len(v) for rid, v in per_run.items()}


def leaderboard(store: ArtifactStore, *, dataset_version: str | None = None) -> pa.Table:
    """One row per evaluated run (its newest evaluation joined with its newest run event), best accuracy first.

    ``img_per_s`` is evaluation (inference) throughput; ``train_img_per_s`` the mean over training epochs.
    ``dataset_version`` keeps only runs evaluated on that version.
    """
    evals = [e for e in store.read("evaluations").to_pylist() if e.get("split") in (None, "test")]
    latest_eval = _latest_by(evals, "run_id", "created_at")
    runs = {r["run_id"]: r for r in store.runs_latest().to_pylist()}
    train_tput = _mean_train_throughput(store)
    rows = []
    for run_id, ev in latest_eval.items():
        run = runs.get(run_id, {})
        version = ev["dataset_version"] or run.get("dataset_version")
        if dataset_version is not None and version != dataset_version:
            continue
        rows.append(
            {
                "variant": ev["variant"] or run.get("variant"),
                "accuracy": ev["accuracy"],
                "macro_f1": ev["macro_f1"],
                "params": run.get("num_params"),
                "img_per_s": ev["img_per_s"],
                "train_img_per_s": train_tput.get(run_id),
                "epochs": run.get("epochs_completed"),
                "wall_seconds": run.get("wall_seconds"),
                "dataset_version": version,
                "status": run.get("status"),
                "run_id": run_id,
            }
        )
    rows.sort(key=lambda r: (-r["accuracy"], -(r["macro_f1"] or 0.0), r["run_id"]))
    return pa.Table.from_pylist(rows, schema=LEADERBOARD_SCHEMA)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_leaderboard(table: pa.Table, *, width: int = 140) -> str:
    """The leaderboard as a plain-text table (rich box drawing, no colour codes) for terminals and logs."""
    if table.num_rows == 0:
        return "no evaluated runs yet"
    view = Table(title="senet-dist leaderboard", show_lines=False)
    columns = [
        ("#", "", "right"),
        ("variant", "", "left"),
        ("test acc", ".4f", "right"),
        ("macro F1", ".4f", "right"),
        ("params", ",", "right"),
        ("eval img/s", ",.1f", "right"),
        ("train img/s", ",.1f", "right"),
        ("epochs", "d", "right"),
        ("wall s", ",.1f", "right"),
        ("dataset", "", "left"),
        ("run_id", "", "left"),
    ]
    for title, _, justify in columns:
        view.add_column(title, justify=justify)  # type: ignore[arg-type]
    keys = [
        "variant",
        "accuracy",
        "macro_f1",
        "params",
        "img_per_s",
        "train_img_per_s",
        "epochs",
        "wall_seconds",
        "dataset_version",
        "run_id",
    ]
    for rank, row in enumerate(table.to_pylist(), start=1):
        cells = [_fmt(row[k], spec) for k, (_, spec, _) in zip(keys, columns[1:], strict=True)]
        view.add_row(str(rank), *cells)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False).print(view)
    return buf.getvalue()


def _labels(table: pa.Table) -> list[str]:
    variants, run_ids = table["variant"].to_pylist(), table["run_id"].to_pylist()
    dup = {v for v in variants if variants.count(v) > 1}
    return [f"{v}\n{r[-8:]}" if v in dup else str(v) for v, r in zip(variants, run_ids, strict=True)]


def plot_comparison(table: pa.Table, path: str | os.PathLike[str]) -> str:
    """Bar chart PNG: test accuracy and macro F1 per run (left), evaluation throughput (right).

    ``path`` may be local or a storage URI (``s3://...``). Returns where it was written.
    """
    if table.num_rows == 0:
        raise ValueError("no evaluated runs to plot; run training/evaluation first")
    labels, n = _labels(table), table.num_rows
    fig = new_figure(max(8.0, 1.6 * n + 4), 4.5)
    ax_q, ax_t = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    xs, w = list(range(n)), 0.38
    acc = [v or 0.0 for v in table["accuracy"].to_pylist()]
    f1 = [v or 0.0 for v in table["macro_f1"].to_pylist()]
    for offset, values, name in ((-w / 2, acc, "test accuracy"), (w / 2, f1, "macro F1")):
        bars = ax_q.bar([x + offset for x in xs], values, w, label=name)
        ax_q.bar_label(bars, fmt="%.3f", fontsize=7)
    ax_q.set_ylim(0, 1.2)
    ax_q.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    ax_q.set_title("quality (test split)")
    ax_q.legend(loc="upper right", ncol=2, fontsize=8)
    ax_t.bar(xs, [v or 0.0 for v in table["img_per_s"].to_pylist()], color="tab:green")
    ax_t.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    ax_t.set_title("evaluation throughput (img/s)")
    return save_png(fig, path)
