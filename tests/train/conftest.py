"""Real lfw-subset shards of these tests (the local Ray and the tiny training config: tests/conftest.py)."""

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
