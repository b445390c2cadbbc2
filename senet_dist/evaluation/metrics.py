"""Scoring a model on a dataset split in this process: accuracy, per-class P/R/F1, confusion matrix, top-k and
inference latency (:class:`EvalReport`), and a few sample predictions to look at (:class:`Samples`). Metrics are
computed from the confusion matrix with numpy (no sklearn dependency).

The model comes loaded (:class:`~senet_dist.train.checkpoint.LoadedModel`, from the one load path
``load_model``), so a report and its samples score the same weights without loading them twice; the images get
the evaluation view the run trained with (``meta.eval_view``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from senet_dist.devices import resolve_device
from senet_dist.errors import PermanentError
from senet_dist.storage import redact
from senet_dist.train.checkpoint import LoadedModel, load_model

if TYPE_CHECKING:
    from senet_dist.data import DatasetInfo


class EvaluationError(PermanentError, ValueError):
    """The model cannot be scored on that split: its classes differ from the dataset's, or the split is empty."""


@dataclass
class ClassMetrics:
    class_name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvalReport:
    """One row of the ``evaluations`` table (``to_dict``) plus the raw confusion matrix."""

    run_id: str
    variant: str
    dataset_version: str
    split: str
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    top_k_accuracy: float | None  # top-5, only when there are more than 5 classes
    per_class: list[ClassMetrics]
    confusion_matrix: np.ndarray  # rows = true class, columns = predicted class
    latency_ms_per_image: float
    img_per_s: float
    num_samples: int
    checkpoint: str = ""
    weights: str = "model"  # which weights were scored: "model" (trained) or "ema" (their moving average)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return [c.class_name for c in self.per_class]

    def to_dict(self) -> dict[str, Any]:
        """JSON/Arrow-ready: plain floats, ints, lists; ``report_json`` holds the whole report as one string."""
        d = {
            "run_id": self.run_id,
            "variant": self.variant,
            "dataset_version": self.dataset_version,
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "weighted_precision": self.weighted_precision,
            "weighted_recall": self.weighted_recall,
            "weighted_f1": self.weighted_f1,
            "top_k_accuracy": self.top_k_accuracy,
            "per_class": [asdict(c) for c in self.per_class],
            "confusion_matrix": self.confusion_matrix.astype(int).tolist(),
            "latency_ms_per_image": self.latency_ms_per_image,
            "img_per_s": self.img_per_s,
            "weights": self.weights,
        }
        full = d | {"split": self.split, "num_samples": self.num_samples, "checkpoint": self.checkpoint} | self.extra
        d["report_json"] = json.dumps(full, sort_keys=True)
        return d


def classification_metrics(cm: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class and macro/weighted precision/recall/F1 from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = int(support.sum())
    w = support / total if total else np.zeros_like(tp)
    per_class = [
        ClassMetrics(name, float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_precision": float((precision * w).sum()),
        "weighted_recall": float((recall * w).sum()),
        "weighted_f1": float((f1 * w).sum()),
        "per_class": per_class,
    }


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    idx = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(preds, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_model(
    loaded: LoadedModel,
    version_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    num_workers: int = 0,
    run_id: str | None = None,
    top_k: int = 5,
) -> EvalReport:
    """Score a loaded model on ``split`` of a dataset version (images prepared with the run's evaluation view)."""
    from senet_dist.data import DatasetInfo, make_loader

    dev = resolve_device(device, fallback="error")
    info = DatasetInfo.load(version_dir)
    check_classes(loaded, info)
    model = loaded.model.to(dev).eval()
    lcfg = loaded.meta.eval_view.loader_config(batch_size, num_workers)
    loader = make_loader(version_dir, split, lcfg, train=False)
    labels, preds, topk_hits, infer_s = _predict(model, loader, dev, top_k if info.num_classes > top_k else 0)
    n = len(labels)
    if n == 0:
        hint = " (sharded with a test fraction of 0: evaluate --split val)" if split == "test" else ""
        raise EvaluationError(f"split {split!r} of {redact(str(version_dir))} is empty{hint}")
    cm = confusion_matrix(labels, preds, info.num_classes)
    m = classification_metrics(cm, list(info.classes))
    return EvalReport(
        run_id=run_id or loaded.meta.run_name or Path(loaded.location).resolve().parent.name,
        variant=loaded.meta.model,
        dataset_version=str(info.version),
        split=split,
        top_k_accuracy=topk_hits / n if info.num_classes > top_k else None,
        confusion_matrix=cm,
        latency_ms_per_image=1000 * infer_s / n,
        img_per_s=n / infer_s if infer_s > 0 else 0.0,
        num_samples=n,
        checkpoint=redact(loaded.location),
        weights=loaded.weights,
        extra={"epoch": loaded.meta.epoch, "device": dev.type, "batch_size": batch_size},
        **m,
    )


def evaluate_checkpoint(
    location: str | Path, version_dir: str | Path, *, weights: str = "auto", **options: Any
) -> EvalReport:
    """:func:`evaluate_model` of the checkpoint at ``location`` (a checkpoint or run directory, local or a URI).

    ``weights="auto"`` scores the better of the trained and the EMA weights on val at that epoch (the report's
    ``weights`` says which)."""
    return evaluate_model(load_model(location, weights=weights), version_dir, **options)


def check_classes(loaded: LoadedModel, info: DatasetInfo) -> None:
    """A model only scores data with its own classes, in its own order."""
    if list(info.classes) != list(loaded.meta.classes):
        raise EvaluationError(
            f"checkpoint classes {loaded.meta.classes} differ from {info.version}'s classes {list(info.classes)}"
        )


def report_split(version_dir: str | Path) -> str:
    """The split a run is reported on: ``test``, or ``val`` when the version was sharded without a test split
    (e.g. an 80/20 train/val recipe; checkpoints were then also selected on val, so the figure is optimistic)."""
    from senet_dist.data import DatasetInfo

    return "test" if DatasetInfo.load(version_dir).counts.get("test", 0) > 0 else "val"


@dataclass
class Samples:
    """A few images of a split as the model saw them (uint8 NHWC), with true and predicted class names."""

    images: np.ndarray
    true: list[str]
    predicted: list[str]
    weights: str

    @property
    def titles(self) -> list[str]:
        return [f"{t} / {p}" for t, p in zip(self.true, self.predicted, strict=True)]


@torch.no_grad()
def sample_predictions(loaded: LoadedModel, version_dir: str | Path, *, split: str = "test", n: int = 16) -> Samples:
    """The first ``n`` images of ``split`` (evaluation view, on the CPU) with the model's predictions."""
    from senet_dist.data import make_loader

    model = loaded.model.cpu().eval()
    view = loaded.meta.eval_view
    images, labels = next(iter(make_loader(version_dir, split, view.loader_config(batch_size=n), train=False)))
    predicted = model(images).argmax(1)
    mean = torch.tensor(view.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(view.std).view(1, 3, 1, 1) * 255
    pixels = (images * std + mean).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    classes = list(loaded.meta.classes)
    return Samples(
        pixels, [classes[i] for i in labels.tolist()], [classes[i] for i in predicted.tolist()], loaded.weights
    )


@torch.no_grad()
def _predict(
    model: torch.nn.Module, loader: Any, dev: torch.device, k: int
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Predictions over the loader; ``infer_s`` times only the forward passes (synchronised on GPU)."""
    labels, preds, hits, infer_s, warm = [], [], 0, 0.0, False
    for images, y in loader:
        images = images.to(dev, non_blocking=True)
        if not warm:  # first call pays one-off allocator/cudnn set-up; keep it out of the latency figure
            model(images)
            warm = True
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        logits = model(images)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        infer_s += time.perf_counter() - t0
        logits = logits.float().cpu()
        preds.append(logits.argmax(1).numpy())
        labels.append(y.numpy())
        if k:
            hits += int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0.0
    return np.concatenate(labels), np.concatenate(preds), hits, infer_s
