"""Data layer: ImageFolder -> versioned WebDataset shards + Parquet manifest -> per-rank batch loaders."""

from .datasets import fetch_dataset, list_datasets
from .images import EncodeConfig, process_image
from .loader import Loader, LoaderConfig, LoaderOptions, make_loader
from .manifest import DatasetInfo, latest_version, list_versions, resolve_version
from .shard import ShardConfig, ShardResult, fingerprint_source, shard_dataset
from .source import DatasetError
from .stream import ShardReadError

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "EncodeConfig",
    "Loader",
    "LoaderConfig",
    "LoaderOptions",
    "ShardConfig",
    "ShardReadError",
    "ShardResult",
    "fetch_dataset",
    "fingerprint_source",
    "latest_version",
    "list_datasets",
    "list_versions",
    "make_loader",
    "process_image",
    "resolve_version",
    "shard_dataset",
]
