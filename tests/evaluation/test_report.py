"""The report an evaluation writes (senet_dist.evaluation.report): the plots, and ``write_report``'s one layout for
``senet-dist evaluate`` and the flow, to a directory and to a bucket."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from senet_dist.evaluation.report import plot_confusion_matrix, plot_curves, write_report
from tests.helpers import epoch_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path) -> None:
    cm_png = plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"], tmp_path / "cm.png")
    hist = [epoch_metrics(epoch=e, train_loss=1 / e, val_loss=1.1 / e, val_acc=0.4, best_val_acc=0.4) for e in (1, 2)]
    curves = plot_curves(hist, tmp_path / "sub" / "curves.png")
    for p in (Path(cm_png), Path(curves)):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_plot_input_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_curves([], tmp_path / "y.png")


def test_write_report_names_every_file_the_same_everywhere(lfw_checkpoint, tmp_path, s3_bucket) -> None:
    from senet_dist.evaluation.metrics import evaluate_model, sample_predictions
    from senet_dist.storage import list_files, read_bytes
    from senet_dist.train.checkpoint import load_model

    ckpt, version, _ = lfw_checkpoint
    loaded = load_model(ckpt)
    report = evaluate_model(loaded, version, device="cpu")
    samples = sample_predictions(loaded, version, n=4)
    history = [epoch_metrics(epoch=e) for e in (1, 2)]
    names = ["confusion_matrix.png", "curves.png", "report.json", "samples.png"]
    assert sorted(write_report(report, tmp_path / "out", samples=samples, history=history)) == names
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    assert json.loads((tmp_path / "out" / "report.json").read_text())["accuracy"] == report.accuracy
    uri = f"s3://{s3_bucket}/reports/run-1"
    assert sorted(write_report(report, uri, samples=None, history=[])) == ["confusion_matrix.png", "report.json"]
    assert list_files(uri) == ["confusion_matrix.png", "report.json"]
    assert read_bytes(f"{uri}/confusion_matrix.png")[:8] == PNG
