"""Scoring a model (senet_dist.evaluation.metrics): the metric maths, and real checkpoints on real lfw-subset shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from senet_dist.evaluation.metrics import (
    EvaluationError,
    classification_metrics,
    confusion_matrix,
    evaluate_checkpoint,
    evaluate_model,
    sample_predictions,
)
from senet_dist.train.checkpoint import load_model


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


# ---- evaluate_checkpoint on a real checkpoint (tests/conftest.py: lfw_checkpoint) over real lfw-subset shards ----
def test_evaluate_checkpoint_report_is_consistent(lfw_checkpoint, tmp_path) -> None:
    ckpt, version, info = lfw_checkpoint
    report = evaluate_checkpoint(ckpt, version, split="test", batch_size=7, device="cpu")
    n = info.counts["test"]
    assert report.num_samples == n == sum(c.support for c in report.per_class)
    assert report.confusion_matrix.sum() == n
    assert report.confusion_matrix.sum(axis=1).tolist() == [c.support for c in report.per_class]
    assert report.accuracy == pytest.approx(np.trace(report.confusion_matrix) / n)
    assert report.accuracy > 0.7  # lfw-subset is trivially separable; chance is 0.5
    assert report.top_k_accuracy is None  # only 2 classes
    assert report.latency_ms_per_image > 0 and report.img_per_s > 0
    d = report.to_dict()
    expected = {
        "run_id",
        "variant",
        "dataset_version",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
        "top_k_accuracy",
        "per_class",
        "confusion_matrix",
        "latency_ms_per_image",
        "img_per_s",
        "weights",
        "report_json",
    }
    assert set(d) == expected
    assert d["weights"] == report.weights == "model"  # no EMA in this checkpoint
    assert d["run_id"] == "eval-test" and d["dataset_version"] == info.version
    assert json.loads(d["report_json"])["num_samples"] == n
    assert report.checkpoint == str(ckpt)


def test_evaluation_uses_the_better_weights_and_says_which(lfw_checkpoint, tmp_path) -> None:
    """A checkpoint holding trained and EMA weights: "auto" scores the one meta.json names as better on val."""
    import torch

    from senet_dist.train.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint

    ckpt, version, _ = lfw_checkpoint
    with pytest.raises(CheckpointError, match="no EMA weights"):
        evaluate_checkpoint(ckpt, version, weights="ema", device="cpu")
    state, meta = load_checkpoint(ckpt), read_meta(ckpt)
    good = state["model"]
    broken = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in good.items()}  # constant logits
    state = {**state, "model": broken, "ema": {"model": good, "updates": 10}}
    both = save_checkpoint(tmp_path / "both", state, meta.model_copy(update={"better_weights": "ema"}))
    auto = evaluate_checkpoint(both, version, device="cpu")
    raw = evaluate_checkpoint(both, version, weights="model", device="cpu")
    assert auto.weights == "ema" and raw.weights == "model"
    assert auto.accuracy > 0.7 and raw.accuracy == 0.5  # zeroed weights predict one class of two balanced ones
    assert json.loads(auto.to_dict()["report_json"])["weights"] == "ema"


def test_evaluate_rejects_bad_inputs(lfw_checkpoint, tmp_path) -> None:
    from senet_dist.train.checkpoint import CheckpointError

    ckpt, version, _ = lfw_checkpoint
    with pytest.raises(CheckpointError, match="neither a senet-dist checkpoint"):
        evaluate_checkpoint(tmp_path, version)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_checkpoint(ckpt, version, split="holdout")
    loaded = load_model(ckpt)
    swapped = loaded.meta.model_copy(update={"classes": loaded.meta.classes[::-1]})
    with pytest.raises(EvaluationError, match="differ from"):
        evaluate_model(type(loaded)(loaded.model, swapped, loaded.weights, loaded.location), version)


def test_one_load_serves_the_report_and_its_samples(lfw_checkpoint) -> None:
    """evaluate_model and sample_predictions take the loaded model: the weights are read once, and both see them."""
    ckpt, version, _ = lfw_checkpoint
    loaded = load_model(ckpt)
    report = evaluate_model(loaded, version, device="cpu")
    samples = sample_predictions(loaded, version, n=4)
    assert report.weights == samples.weights == loaded.weights == "model"
    assert report.variant == loaded.meta.model and report.run_id == loaded.meta.run_name


def test_top5_counts_labels_ranked_within_five() -> None:
    import torch

    from senet_dist.evaluation.metrics import _predict

    scores = torch.arange(8, dtype=torch.float32).flip(0).repeat(4, 1)  # class 0 ranks 1st ... class 7 ranks 8th
    labels = torch.tensor([0, 4, 5, 7])  # ranks 1, 5, 6, 8 -> two inside the top 5
    y, p, hits, _ = _predict(torch.nn.Identity(), [(scores, labels)], torch.device("cpu"), 5)
    assert hits == 2 and p.tolist() == [0, 0, 0, 0] and y.tolist() == [0, 4, 5, 7]


def test_sample_predictions_give_the_images_as_seen_with_names(lfw_checkpoint, tmp_path) -> None:
    from senet_dist.evaluation.report import plot_sample_grid

    ckpt, version, info = lfw_checkpoint
    s = sample_predictions(load_model(ckpt), version, split="test", n=6)
    assert s.images.shape == (6, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.images.std() > 10  # real pixels back from the normalised batch, not a constant
    assert set(s.true) <= set(info.classes) and set(s.predicted) <= set(info.classes)
    assert sum(t == p for t, p in zip(s.true, s.predicted, strict=True)) >= 4  # the model beats chance here too
    assert s.titles[0] == f"{s.true[0]} / {s.predicted[0]}" and s.weights == "model"
    assert Path(plot_sample_grid(s.images, s.titles, tmp_path / "grid.png", cols=4)).stat().st_size > 1000
    with pytest.raises(ValueError, match="need N>0 images"):
        plot_sample_grid(s.images[:2], s.titles, tmp_path / "bad.png")
