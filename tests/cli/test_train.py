"""``senet-dist train`` / ``evaluate`` as library calls: the per-epoch table stays whole in a log file (no ``1.22…``
cut-offs); ``evaluate_command`` writes the same report layout as the flow."""

from __future__ import annotations

import io
import json

from rich.console import Console

from senet_dist.cli.train import evaluate_command, history_table, print_wide
from tests.helpers import epoch_metrics


def test_the_epoch_table_is_not_truncated_when_output_goes_to_a_file():
    history = [
        epoch_metrics(
            train_loss=1.2205,
            train_acc=0.6705,
            val_loss=1.6393,
            val_acc=0.5933,
            best_val_acc=0.5933,
            img_per_s=596.0,
            epoch_seconds=98.9,
            train_seconds=95.0,
            steps=445,
            ema_val_loss=0.4795,
            ema_val_acc=0.8390,
        )
    ]
    out = io.StringIO()
    console = Console(file=out, width=80)  # what rich assumes for a pipe or a log file
    print_wide(console, history_table(history))
    text = out.getvalue()
    assert "…" not in text
    for figure in ("1.2205", "0.6705", "1.6393", "0.5933", "0.4795", "0.8390", "596", "98.9"):
        assert figure in text


def test_evaluate_command_writes_report_and_plots(lfw_checkpoint, tmp_path) -> None:
    ckpt, version, info = lfw_checkpoint
    console = Console(record=True, width=120)
    shards_root = version.parent  # a shards root resolves to its LATEST version
    report = evaluate_command(
        ckpt, shards_root, split="val", out_dir=tmp_path / "out", batch_size=8, device="cpu", console=console
    )
    assert report.num_samples == info.counts["val"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["accuracy"] == report.accuracy and saved["run_id"] == "eval-test"
    assert (tmp_path / "out" / "confusion_matrix.png").stat().st_size > 1000  # the flow's name for it
    assert (tmp_path / "out" / "samples.png").stat().st_size > 1000
    assert "non_face" in console.export_text()
