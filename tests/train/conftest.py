"""Real lfw-subset shards and the tiny training config of these tests (the local Ray: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lfw_version(lfw_shards_factory) -> Path:
    """lfw-subset (200 real 25x25 images, 2 classes) as small shards: 8 train shards, 1 val, 1 test."""
    from senet_dist.data import DatasetInfo

    version = lfw_shards_factory(None)  # max_count=20, no resize, PNG
    assert len(DatasetInfo.load(version).shards["train"]) >= 4
    return version


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
        "loader.crop_scale": [0.5, 1.0],
        "seed": 0,
    }
    return TrainConfig().with_overrides(base | overrides)
