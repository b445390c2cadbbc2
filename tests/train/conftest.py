"""Real lfw-subset shards and the tiny training config of these tests (the local Ray: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lfw_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lfw-subset (200 real 25x25 images, 2 classes) as small shards: 8 train shards, 1 val, 1 test."""
    from senet_dist.data import ShardConfig, fetch_dataset, shard_dataset

    root = tmp_path_factory.mktemp("lfw")
    src = fetch_dataset("lfw-subset", root / "src", num_procs=1)
    cfg = ShardConfig(max_count=20, resize_shorter=None, image_format="png", progress=False, num_procs=1)
    result = shard_dataset(src, root / "shards", cfg)
    assert len(result.shards["train"]) >= 4
    return result.version_dir


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: seeded tiny-model config that reliably separates lfw-subset in 2 epochs on 2 CPU workers."""
    return _tiny_config


def _tiny_config(**overrides):
    from senet_dist.train import TrainConfig

    base = {
        "model": "se_resnet_tiny",
        "epochs": 2,
        "batch_size": 16,
        "num_workers": 2,
        "loader_workers": 1,
        "image_size": 32,
        "optimizer.lr": 0.05,
        "loader_kwargs": {"crop_scale": [0.5, 1.0]},
        "seed": 0,
    }
    return TrainConfig().with_overrides(base | overrides)
