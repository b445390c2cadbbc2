"""Distributed training: config (``TrainConfig``), the per-worker loop, and the Ray Train launcher (``fit``).

``train_func_per_worker`` is imported lazily so ``import senet_dist.train`` stays cheap and Ray-free.
"""

from __future__ import annotations

from typing import Any

from senet_dist.train.config import ConfigError, OptimizerConfig, ScheduleConfig, TrainConfig
from senet_dist.train.launcher import FitResult, default_run_name, ensure_ray, fit, room_for_all, shutdown_ray

__all__ = [
    "ConfigError",
    "FitResult",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "default_run_name",
    "ensure_ray",
    "fit",
    "room_for_all",
    "shutdown_ray",
    "train_func_per_worker",
]


def __getattr__(name: str) -> Any:
    if name == "train_func_per_worker":
        from senet_dist.train.worker import train_func_per_worker

        return train_func_per_worker
    raise AttributeError(f"module 'senet_dist.train' has no attribute {name!r}")
