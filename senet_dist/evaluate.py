"""Single-process evaluation of a checkpoint on a dataset split: accuracy, per-class P/R/F1, confusion matrix,
top-k and inference latency. Metrics are computed from the confusion matrix with numpy (no sklearn dependency).
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

if TYPE_CHECKING:
    from senet_dist.data import LoaderConfig
from senet_dist.train.checkpoint import model_from_checkpoint, resolve_checkpoint


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


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    version_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    num_workers: int = 0,
    run_id: str | None = None,
    top_k: int = 5,
    weights: str = "auto",
) -> EvalReport:
    """Evaluate a checkpoint (or a run directory: its best checkpoint) on ``split`` of a dataset version.

    ``weights="auto"`` scores the better of the trained and the EMA weights on val at that epoch (the report's
    ``weights`` says which); images get the evaluation view and normalisation the run trained with.
    """
    from senet_dist.data import DatasetInfo, make_loader

    checkpoint_dir = resolve_checkpoint(checkpoint_dir)
    dev = resolve_device(device, fallback="error")
    model, meta = model_from_checkpoint(checkpoint_dir, map_location="cpu", weights=weights)
    info = DatasetInfo.load(version_dir)
    if list(info.classes) != list(meta["classes"]):
        raise ValueError(f"checkpoint classes {meta['classes']} differ from dataset classes {list(info.classes)}")
    model = model.to(dev).eval()
    loader = make_loader(version_dir, split, eval_loader_config(meta, batch_size, num_workers), train=False)
    labels, preds, topk_hits, infer_s = _predict(model, loader, dev, top_k if info.num_classes > top_k else 0)
    n = len(labels)
    if n == 0:
        hint = " (sharded with a test fraction of 0: evaluate --split val)" if split == "test" else ""
        raise ValueError(f"split {split!r} of {version_dir} is empty{hint}")
    cm = confusion_matrix(labels, preds, info.num_classes)
    m = classification_metrics(cm, list(info.classes))
    return EvalReport(
        run_id=run_id or meta.get("run_name") or Path(checkpoint_dir).resolve().parent.name,
        variant=meta["model"],
        dataset_version=str(info.version),
        split=split,
        top_k_accuracy=topk_hits / n if info.num_classes > top_k else None,
        confusion_matrix=cm,
        latency_ms_per_image=1000 * infer_s / n,
        img_per_s=n / infer_s if infer_s > 0 else 0.0,
        num_samples=n,
        checkpoint=str(checkpoint_dir),
        weights=meta["weights"],
        extra={"epoch": meta.get("epoch"), "device": dev.type, "batch_size": batch_size},
        **m,
    )


def report_split(version_dir: str | Path) -> str:
    """The split a run is reported on: ``test``, or ``val`` when the version was sharded without a test split
    (e.g. an 80/20 train/val recipe; checkpoints were then also selected on val, so the figure is optimistic)."""
    from senet_dist.data import DatasetInfo

    return "test" if DatasetInfo.load(version_dir).counts.get("test", 0) > 0 else "val"


EVAL_VIEW = ("augment", "eval_crop_ratio", "mean", "std", "decoder")  # loader options that shape an eval batch


def eval_loader_config(meta: dict[str, Any], batch_size: int, num_workers: int) -> LoaderConfig:
    """The loader the run validated with (view, normalisation, decoder from its saved ``loader`` section), read
    on the CPU; checkpoints without a saved config get the defaults."""
    from senet_dist.data import LoaderConfig

    saved = (meta.get("config") or {}).get("loader") or {}
    view = {k: saved[k] for k in EVAL_VIEW if k in saved}
    return LoaderConfig(
        batch_size=batch_size, image_size=int(meta.get("image_size", 32)), num_workers=num_workers, **view
    )


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
def sample_predictions(
    checkpoint_dir: str | Path, version_dir: str | Path, *, split: str = "test", n: int = 16, weights: str = "auto"
) -> Samples:
    """The first ``n`` images of ``split`` (evaluation view, on the CPU) with the checkpoint's predictions."""
    from senet_dist.data import make_loader

    checkpoint_dir = resolve_checkpoint(checkpoint_dir)
    model, meta = model_from_checkpoint(checkpoint_dir, map_location="cpu", weights=weights)
    lcfg = eval_loader_config(meta, batch_size=n, num_workers=0)
    images, labels = next(iter(make_loader(version_dir, split, lcfg, train=False)))
    predicted = model.eval()(images).argmax(1)
    mean = torch.tensor(lcfg.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(lcfg.std).view(1, 3, 1, 1) * 255
    pixels = (images * std + mean).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    classes = list(meta["classes"])
    return Samples(
        pixels, [classes[i] for i in labels.tolist()], [classes[i] for i in predicted.tolist()], meta["weights"]
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
