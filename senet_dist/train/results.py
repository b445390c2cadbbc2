"""What a training run hands back across layers: per-epoch metrics and the run's result.

``EpochMetrics`` is what every rank reports to Ray Train each epoch and what ``meta.json``, the ``epochs`` table,
the CLI's table and the curves plot read: one set of names everywhere.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Literal


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    best_val_acc: float  # best so far, this epoch included
    lr: float  # the lr this epoch started at
    img_per_s: float  # training throughput over all ranks
    train_seconds: float
    epoch_seconds: float
    steps: int  # optimizer steps per rank
    world_size: int
    resumed_from_epoch: int  # 0: this attempt started fresh
    stopped_early: bool
    ema_val_loss: float | None = None  # the EMA weights on val (None: ema off)
    ema_val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        """Tolerates histories written before a field with a default existed (older checkpoints)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.default is MISSING})

    @property
    def better_weights(self) -> Literal["model", "ema"]:
        """``"ema"`` when the EMA weights beat the trained ones on val this epoch, else ``"model"`` (ties: model)."""
        return "ema" if self.ema_val_acc is not None and self.ema_val_acc > self.val_acc else "model"


@dataclass(frozen=True)
class FitResult:
    """A finished training run: its epochs and the checkpoints Ray Train kept (URIs or local paths)."""

    run_name: str
    storage_path: str
    history: list[EpochMetrics]
    best_checkpoint: str | None  # highest keep_best_by metric among the kept checkpoints
    last_checkpoint: str | None
    checkpoints: list[str]  # every checkpoint Ray kept (best-N by keep_best_by), best first
    wall_seconds: float
    num_params: int | None

    @property
    def epochs_completed(self) -> int:
        return self.history[-1].epoch if self.history else 0


__all__ = ["EpochMetrics", "FitResult"]
