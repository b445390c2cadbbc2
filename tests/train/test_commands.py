"""The per-epoch table ``senet-dist train`` prints stays whole in a log file (no ``1.22…`` cut-offs)."""

from __future__ import annotations

import io

from rich.console import Console

from senet_dist.train.commands import _print_wide, history_table
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
    _print_wide(console, history_table(history))
    text = out.getvalue()
    assert "…" not in text
    for figure in ("1.2205", "0.6705", "1.6393", "0.5933", "0.4795", "0.8390", "596", "98.9"):
        assert figure in text
