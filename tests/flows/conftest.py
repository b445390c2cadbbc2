"""Flow tests run against a real (temporary, SQLite) Prefect server and a real local Ray cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lfw_source(lfw_source_factory) -> Path:
    """A small real ImageFolder (scikit-image's LFW subset, 24 images per class)."""
    return lfw_source_factory(24)


@pytest.fixture()
def source_copy(lfw_source, tmp_path) -> Path:
    """A private copy each test may modify (space and unicode in the path on purpose)."""
    dst = tmp_path / "my data ü"
    shutil.copytree(lfw_source, dst)
    return dst
