"""Data layer: ImageFolder -> versioned WebDataset shards + Parquet manifest -> per-rank batch loaders.

Names are imported on first use (PEP 562): the loader pulls in torch (seconds), and light callers such as the
CLI's ``--help`` (which lists the built-in datasets) must not pay for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ShardConfig
    from .datasets import DatasetSpec, dataset_specs, fetch_dataset, list_datasets
    from .groups import sharding_executor
    from .images import EncodeConfig, process_image
    from .loader import Loader, LoaderConfig, LoaderOptions, make_loader
    from .manifest import DatasetInfo, latest_version, list_versions, resolve_version
    from .preprocess import Preprocess
    from .reader import ShardUnavailableError
    from .shard import ShardResult, fingerprint_source, shard_dataset, source_changed
    from .source import DatasetError
    from .stream import ShardReadError

_WHERE = {
    "DatasetSpec": "datasets",
    "dataset_specs": "datasets",
    "fetch_dataset": "datasets",
    "list_datasets": "datasets",
    "EncodeConfig": "images",
    "process_image": "images",
    "Loader": "loader",
    "LoaderConfig": "loader",
    "LoaderOptions": "loader",
    "make_loader": "loader",
    "DatasetInfo": "manifest",
    "latest_version": "manifest",
    "list_versions": "manifest",
    "resolve_version": "manifest",
    "ShardConfig": "config",
    "Preprocess": "preprocess",
    "ShardResult": "shard",
    "sharding_executor": "groups",
    "source_changed": "shard",
    "fingerprint_source": "shard",
    "shard_dataset": "shard",
    "DatasetError": "source",
    "ShardReadError": "stream",
    "ShardUnavailableError": "reader",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later look-ups (and mock.patch) see a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
