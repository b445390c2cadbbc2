"""senet_dist.evaluation.leaderboard: leaderboard joined from the tables, text rendering, comparison PNG."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from senet_dist import storage
from senet_dist.artifacts import ArtifactStore
from senet_dist.evaluation.leaderboard import LEADERBOARD_SCHEMA, format_leaderboard, leaderboard, plot_comparison

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(
    store: ArtifactStore,
    run_id: str,
    variant: str,
    acc: float | None,
    *,
    params: int = 1000,
    version: str = "v0001-aaa",
    eval_tput: float = 500.0,
) -> None:
    """Two run events (running -> completed/failed), epochs, and an evaluation when ``acc`` is given."""
    base = {"run_id": run_id, "variant": variant, "dataset_version": version}
    store.append("runs", [{**base, "status": "running", "updated_at": T0}])
    store.append("epochs", [{"run_id": run_id, "epoch": e, "img_per_s": 100.0 * (e + 1)} for e in range(2)])
    if acc is None:
        store.append("runs", [{**base, "status": "failed", "error": "boom", "updated_at": T0 + timedelta(1)}])
        return
    store.append("evaluations", [{**base, "accuracy": acc, "macro_f1": acc - 0.05, "img_per_s": eval_tput}])
    store.append(
        "runs",
        [
            {
                **base,
                "status": "completed",
                "num_params": params,
                "epochs_completed": 2,
                "wall_seconds": 12.5,
                "updated_at": T0 + timedelta(1),
            }
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    s = ArtifactStore(tmp_path / "artifacts")
    _record(s, "r-small", "se_resnet_tiny", 0.80, params=1_000)
    _record(s, "r-big", "se_resnet18", 0.92, params=11_000_000, eval_tput=250.0)
    _record(s, "r-crash", "se_densenet121", None)
    _record(s, "r-old", "se_resnet18", 0.60, version="v0000-zzz")
    return s


def test_leaderboard_joins_latest_runs_and_evaluations(store: ArtifactStore) -> None:
    table = leaderboard(store)
    assert table.schema == LEADERBOARD_SCHEMA
    assert table["run_id"].to_pylist() == ["r-big", "r-small", "r-old"]  # accuracy desc, failed run absent
    top = table.to_pylist()[0]
    assert top == {
        "variant": "se_resnet18",
        "accuracy": 0.92,
        "macro_f1": pytest.approx(0.87),
        "params": 11_000_000,
        "img_per_s": 250.0,
        "train_img_per_s": 150.0,
        "epochs": 2,
        "wall_seconds": 12.5,
        "dataset_version": "v0001-aaa",
        "status": "completed",
        "run_id": "r-big",
    }
    only = leaderboard(store, dataset_version="v0000-zzz")
    assert only["run_id"].to_pylist() == ["r-old"]


def test_newer_evaluation_of_a_run_wins(store: ArtifactStore) -> None:
    store.append(
        "evaluations",
        [
            {
                "run_id": "r-small",
                "variant": "se_resnet_tiny",
                "accuracy": 0.99,
                "created_at": datetime.now(timezone.utc) + timedelta(days=1),
            }
        ],
    )
    table = leaderboard(store)
    assert table["run_id"].to_pylist()[0] == "r-small" and table.num_rows == 3


def test_format_leaderboard_text(store: ArtifactStore) -> None:
    text = format_leaderboard(leaderboard(store))
    lines = text.splitlines()
    assert "leaderboard" in lines[0]
    big, small = (
        next(i for i, ln in enumerate(lines) if "r-big" in ln),
        next(i for i, ln in enumerate(lines) if "r-small" in ln),
    )
    assert big < small
    assert "0.9200" in lines[big] and "11,000,000" in lines[big]
    assert "\x1b[" not in text  # no ANSI colour codes in logs
    assert format_leaderboard(leaderboard(ArtifactStore(store.root + "-empty"))) == "no evaluated runs yet"


def test_plot_comparison_writes_png(store: ArtifactStore, tmp_path: Path) -> None:
    out = tmp_path / "plots" / "comparison.png"
    written = plot_comparison(leaderboard(store), out)
    assert Path(written) == out.resolve()
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    with pytest.raises(ValueError, match="no evaluated runs"):
        plot_comparison(leaderboard(ArtifactStore(tmp_path / "empty")), tmp_path / "x.png")


def test_report_on_s3_root(store: ArtifactStore, tmp_path: Path, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/artifacts"
    storage.upload_dir(store.root, root)  # the same tables, now on S3
    table = leaderboard(ArtifactStore(root))
    assert table["run_id"].to_pylist() == ["r-big", "r-small", "r-old"]
    png = storage.join(root, "reports", "comparison.png")
    assert plot_comparison(table, png) == png
    assert storage.read_bytes(png).startswith(PNG_MAGIC)
