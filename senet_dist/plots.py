"""Headless PNG plots (matplotlib Agg): confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training hosts / CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from senet_dist.train.results import EpochMetrics


def plot_confusion_matrix(cm: Any, classes: Sequence[str], path: str | Path, *, normalize: bool = False) -> Path:
    """Counts (or row-normalised rates) with class names on both axes; numbers drawn for up to 20 classes."""
    cm = np.asarray(cm, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(classes)} classes")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n = len(classes)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
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
    return _save(fig, path)


def plot_curves(history: Sequence[EpochMetrics], path: str | Path) -> Path:
    """Two panels: train/val loss and train/val accuracy per epoch."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ax.plot(epochs, [getattr(h, f"{split}_{key}") for h in history], style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(0, 1.02)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
