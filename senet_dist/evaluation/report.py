"""An evaluation's report on disk or in the bucket: ``report.json`` and its plots, written by one function
(:func:`write_report`) for ``senet-dist evaluate`` and the flow alike, so both name every file the same:

    report.json            the whole EvalReport (metrics, per class, confusion matrix, latency, checkpoint)
    confusion_matrix.png   counts, true class by predicted class
    curves.png             train/val loss and accuracy per epoch (when the run's history is known)
    samples.png            a grid of test images, each titled "true / predicted"

Figures are built object-style (``Figure`` + an Agg canvas), never through pyplot's global state: no display is
needed, concurrent flow tasks can draw at once, and nothing has to be closed. Every chart is made by
:func:`new_figure` and written by :func:`save_png` (a local path or a storage URI such as ``s3://...``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from senet_dist.storage import is_uri, join, write_bytes

if TYPE_CHECKING:
    from senet_dist.evaluation.metrics import EvalReport, Samples
    from senet_dist.train.results import EpochMetrics

DPI = 110
REPORT_FILE, CONFUSION_FILE = "report.json", "confusion_matrix.png"
CURVES_FILE, SAMPLES_FILE = "curves.png", "samples.png"


def write_report(
    report: EvalReport, out: str | os.PathLike[str], *, samples: Samples | None, history: Sequence[EpochMetrics]
) -> list[str]:
    """Write ``report.json`` and the plots into ``out`` (a directory or URI prefix); returns the file names."""
    loc = str(out) if is_uri(out) else str(Path(out).expanduser().resolve())
    plot_confusion_matrix(report.confusion_matrix, report.classes, join(loc, CONFUSION_FILE))
    written = [CONFUSION_FILE]
    if history:
        plot_curves(history, join(loc, CURVES_FILE))
        written.append(CURVES_FILE)
    if samples is not None:
        plot_sample_grid(samples.images, samples.titles, join(loc, SAMPLES_FILE))
        written.append(SAMPLES_FILE)
    write_bytes(join(loc, REPORT_FILE), json.dumps(report.to_dict(), indent=2, default=str).encode())
    return [REPORT_FILE, *written]


def new_figure(width: float, height: float) -> Figure:
    """A headless figure of ``width`` x ``height`` inches."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Lay out and render ``fig`` as PNG to ``path`` (parents created); returns where it went (local: absolute)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    target = str(path) if is_uri(path) else str(Path(path).expanduser().resolve())
    write_bytes(target, buf.getvalue())
    return target


def plot_confusion_matrix(cm: Any, classes: Sequence[str], path: str | Path, *, normalize: bool = False) -> str:
    """Counts (or row-normalised rates) with class names on both axes; numbers drawn for up to 20 classes."""
    cm = np.asarray(cm, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(classes)} classes")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n = len(classes)
    size = max(4.0, 0.5 * n + 2)
    fig = new_figure(size, size)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        hi = shown.max() / 2 if shown.size else 0
        for i in range(n):
            for j in range(n):
                txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="white" if shown[i, j] > hi else "black")
    return save_png(fig, path)


def plot_curves(history: Sequence[EpochMetrics], path: str | Path) -> str:
    """Two panels: train/val loss and train/val accuracy per epoch (plus the EMA weights on val, if kept)."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [h.epoch for h in history]
    series = [("train", "-o"), ("val", "-s")]
    if any(h.ema_val_acc is not None for h in history):
        series.append(("ema_val", "--^"))
    fig = new_figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split, style in series:
            values = [getattr(h, f"{split}_{key}") for h in history]
            ax.plot(epochs, [np.nan if v is None else v for v in values], style, label=split.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(0, 1.02)
    return save_png(fig, path)


def plot_sample_grid(images: np.ndarray, titles: Sequence[str], path: str | Path, *, cols: int = 4) -> str:
    """A grid of uint8 images (N, H, W, 3), each titled (e.g. ``true / predicted``)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(titles) or not len(images):
        raise ValueError(f"need N>0 images of shape (N, H, W, 3) and N titles, got {images.shape}, {len(titles)}")
    rows = -(-len(images) // cols)
    fig = new_figure(2.2 * cols, 2.4 * rows)
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(titles[i], fontsize=8)
    return save_png(fig, path)
