"""Pure metric maths and plots of senet_dist.evaluate / senet_dist.plots (no checkpoint, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from senet_dist.evaluate import classification_metrics, confusion_matrix
from senet_dist.plots import plot_confusion_matrix, plot_curves


def test_confusion_matrix_counts_pairs() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_metrics_match_hand_computation() -> None:
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    a, b, c = m["per_class"]
    assert (a.precision, a.recall, a.support) == (pytest.approx(0.5), pytest.approx(0.5), 2)
    assert (b.precision, b.recall) == (pytest.approx(0.5), pytest.approx(1.0))
    assert b.f1 == pytest.approx(2 / 3)
    assert (c.precision, c.recall) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])  # weighted recall is accuracy by definition


def test_class_never_predicted_or_absent_gives_zero_not_nan() -> None:
    m = classification_metrics(np.array([[3, 0], [0, 0]]), ["x", "y"])
    assert m["per_class"][1].precision == 0.0 and m["per_class"][1].f1 == 0.0
    assert not np.isnan(m["macro_f1"])


def test_plots_write_pngs(tmp_path) -> None:
    cm_png = plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"], tmp_path / "cm.png")
    hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.5, "val_acc": 0.4} for e in (1, 2)]
    curves = plot_curves(hist, tmp_path / "sub" / "curves.png")
    for p in (cm_png, curves):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_plot_input_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_curves([], tmp_path / "y.png")
