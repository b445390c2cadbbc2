"""Distributed training: config (``TrainConfig``), the per-worker loop, and the Ray Train launcher (``fit``).

``train_func_per_worker`` is imported lazily so ``import senet_dist.train`` stays cheap and Ray-free.
"""

from __future__ import annotations

from typing import Any

from senet_dist.errors import ConfigError, ResourceError, TrainingError
from senet_dist.train.config import OptimizerConfig, ScheduleConfig, TrainConfig
from senet_dist.train.launcher import CONFIG_FILE, default_run_name, fit
from senet_dist.train.results import EpochMetrics, FitResult
from senet_dist.train.session import RaySession, worker_group_demand

__all__ = [
    "CONFIG_FILE",
    "ConfigError",
    "EpochMetrics",
    "FitResult",
    "OptimizerConfig",
    "RaySession",
    "ResourceError",
    "ScheduleConfig",
    "TrainConfig",
    "TrainingError",
    "default_run_name",
    "fit",
    "train_func_per_worker",
    "worker_group_demand",
]


def __getattr__(name: str) -> Any:
    if name == "train_func_per_worker":
        from senet_dist.train.worker import train_func_per_worker

        return train_func_per_worker
    raise AttributeError(f"module 'senet_dist.train' has no attribute {name!r}")
